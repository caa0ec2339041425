"""Threshold shares of the recovery key: SLIP-0039 words, envelopes, cards, sealing, transport.

The sub-modules own one concern each:

- :mod:`custody.shares.slip39` -- SLIP-0039 split/combine with per-share diagnostics
  (parsing one share and its typed errors: :mod:`custody.shares.slip39_parse`);
- :mod:`custody.shares.envelope` -- the dealer-signed envelope binding a share to a ceremony;
- :mod:`custody.shares.card` -- printable share cards (PNG, SVG, PDF) and terminal QR
  (a package: facts, geometry, backends);
- :mod:`custody.shares.seal` -- at-rest sealing (passphrase or the custodian's token);
- :mod:`custody.shares.transport` -- remote hand-in (signed X25519 offer, sealed blob, SAS).

Nothing here does I/O beyond what a caller passes in; time and randomness are parameters.
"""

from __future__ import annotations
