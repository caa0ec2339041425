"""A super-admin's endorsement of a ceremony's policy: one more signature in ``policy.json``.

Policy signatures are kept apart from the payload (as in TUF), and the event chain binds
the payload's digest only, so a second super-admin can add their signature to
``policy.json`` without touching anything else in the bundle: before the ceremony runs, or
after it, when they have reviewed the roster and the thresholds. With two or more
super-admins in the roster, the verifier counts a policy only when at least two pinned
super-admins signed it (``docs/transcripts.md``, "Pins"), so this is how the second one
does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from custody.errors import PolicyError, TranscriptError
from custody.signing import fingerprint

from .bundle import POLICY
from .model import FormatError, Sig, SignedPolicy
from .pins import SUPER_ADMIN


def endorse_policy(bundle: str | os.PathLike[str], signer: Any) -> tuple[SignedPolicy, bool]:
    """Add *signer*'s signature to the policy of the bundle directory *bundle*.

    Args:
        bundle: a bundle directory (an archive is never rewritten).
        signer: a Signer (name, alg, public, sign) whose key is a super-admin's in the
            policy's roster.

    Returns:
        The signed policy now on disk, and whether a signature was added (False: this key
        had already signed).

    Raises:
        TranscriptError: not a bundle directory, or its policy.json is damaged or not in
            its exact canonical form, or it cannot be rewritten.
        PolicyError: the signer is not a super-admin of the policy's roster.
    """
    path = Path(bundle) / POLICY
    try:
        raw = path.read_bytes()
        signed = SignedPolicy.from_json(json.loads(raw))
    except (OSError, ValueError, FormatError) as exc:
        raise TranscriptError(
            f"Cannot read the policy of {bundle}", "Give a transcript bundle directory."
        ) from exc
    if signed.to_bytes() != raw:
        raise TranscriptError(
            f"The policy of {bundle} is not in its exact signed form",
            "Verify the bundle; a re-encoded policy.json is never endorsed.",
        )
    pol = signed.policy
    m = next((e for e in pol.roster if e.public == signer.public), None)
    if m is None or m.role != SUPER_ADMIN or m.valid_at(pol.created_at) is not None:
        raise PolicyError(
            "Only a super-admin of the policy's roster can endorse it",
            "Use the key of a super-admin enrolled when the ceremony was created.",
        )
    fp = fingerprint(signer.public)
    if any(s.keyid == fp for s in signed.signatures):
        return signed, False
    sig = Sig(signer=m.name, keyid=fp, sig=signer.sign(SignedPolicy.signing_input(pol)))
    out = SignedPolicy(policy=pol, signatures=(*signed.signatures, sig))
    tmp = path.with_name(f".{POLICY}.{os.getpid()}.endorse")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(out.to_bytes())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise TranscriptError(
            f"Cannot rewrite {path}", f"Check permissions and free space ({exc.strerror})."
        ) from exc
    return out, True
