"""How strong a new passphrase must be, judged by zxcvbn (Dropbox's estimator).

A participant's signing key (``NAME.key.pem``) and a passphrase-sealed share are files. Who
copies one can guess its passphrase offline, as fast as their hardware allows, with no
lock-out. So custody refuses to *create* either under a passphrase that zxcvbn estimates
would fall to fewer than :data:`MIN_GUESSES` guesses (10^12; zxcvbn's top score 4 starts at
10^10). Against a sealed share's Argon2id (64 MiB, memory-hard) that is decades of work;
against the PKCS#8 key file's PBKDF2 (2,048 iterations) it is days of one GPU, which is why
``docs/threat-model.md`` lists the key-file derivation as a known limit. Four or five
random dictionary words, or 16 random characters, clear the bar easily.

zxcvbn looks for dictionary words, names, keyboard walks, dates, repeats and l33t
substitutions, and it is given the participant's name and role as well, so
``alice-passphrase`` for alice counts for little. Only the first
:data:`CHECKED_CHARS` characters are scored (zxcvbn's cost grows with length); a
passphrase whose start is strong is strong.

Opening an existing key or share is never refused: the check applies when a new secret is
chosen. The refusal says why in zxcvbn's own words and never echoes the passphrase.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from zxcvbn import zxcvbn

from custody.errors import UsageError

MIN_GUESSES_LOG10 = 12
MIN_GUESSES = 10**MIN_GUESSES_LOG10
CHECKED_CHARS = 100


class WeakPassphrase(UsageError):
    """A new passphrase is below custody's strength bar (see :mod:`custody.passphrase`)."""


def check_strength(passphrase: str, *, what: str, user_inputs: Iterable[str] = ()) -> None:
    """Refuse *passphrase* when zxcvbn estimates fewer than :data:`MIN_GUESSES` guesses.

    Args:
        passphrase: the new passphrase (never put in the error).
        what: what it protects, for the message ("the key passphrase for alice").
        user_inputs: words an attacker would try first (the participant's name, role).

    Raises:
        WeakPassphrase: too weak; the title gives the estimate, the hint zxcvbn's warning
            and suggestions.
    """
    inputs = [s for s in user_inputs if s]
    result = zxcvbn(passphrase[:CHECKED_CHARS], user_inputs=[*inputs, "custody"])
    log10 = float(result["guesses_log10"])
    if log10 >= MIN_GUESSES_LOG10 and math.isfinite(log10):
        return
    fb = result.get("feedback") or {}
    reasons = [str(fb.get("warning") or "").strip()]
    reasons += [str(s).strip() for s in fb.get("suggestions") or ()]
    reasons = [r for r in reasons if r]
    if not reasons:
        reasons = ["Use four or five random words, or 16 or more random characters."]
    raise WeakPassphrase(
        f"{what[:1].upper()}{what[1:]} is too weak: about 10^{int(log10)} guesses "
        f"would find it; custody requires 10^{MIN_GUESSES_LOG10}",
        " ".join(reasons) + " Nothing was written.",
    )
