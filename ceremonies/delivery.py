"""How a generate or reshare ceremony delivers its shares: sealed to each custodian (the
default) or, only when asked for explicitly, in plain text (recorded in the transcript).

Both front ends (``custody ceremony generate --seal-to`` and the TUI's start form) build
the runner's delivery parameters here, checked before the ceremony opens: every
custodian's ``NAME.pub.json`` must carry the signing key enrolled for them in the roster,
and endorse (sign) its X25519 encryption key. The runner checks the endorsement again
when it seals (:func:`ceremonies.runner.steps.issue.sealed_to`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ceremonies.participants import load_identity
from ceremonies.roster import Roster
from custody.errors import UsageError
from custody.store.port import Store


def identity_files(sources: Sequence[str | Path]) -> list[Path]:
    """The ``NAME.pub.json`` files named by *sources* (files, or directories of them)."""
    files: list[Path] = []
    for s in sources:
        p = Path(s).expanduser()
        files += sorted(p.glob("*.pub.json")) if p.is_dir() else [p]
    return files


def delivery_params(
    store: Store,
    custodians: Sequence[str],
    seal_to: Sequence[str | Path],
    *,
    plain: bool,
    words: tuple[str, str] = ("--seal-to", "--plain-shares"),
) -> dict[str, Any]:
    """The runner's delivery parameters: ``{"seal_to": {name: {"x25519", "endorsement"}}}``
    or, with *plain*, ``{"plain_shares": True}``. *words*: what the front end calls the
    two choices, for the messages.

    Raises:
        UsageError: both or neither of *seal_to* and *plain*; a custodian without an
            identity file, whose file is not the enrolled key, or who has no encryption key.
        ConfigError: an identity file cannot be read.
        IntegrityError: an encryption key's endorsement is forged.
    """
    seal, plain_word = words
    if plain:
        if seal_to:
            raise UsageError(f"Give {seal} or {plain_word}, not both", f"Prefer {seal}.")
        return {"plain_shares": True}
    if not seal_to:
        raise UsageError(
            f"Shares are sealed to their custodians at issue: give {seal}",
            f"Give {seal} DIR holding each custodian's NAME.pub.json (from 'custody "
            f"participant new'), or {plain_word} to write them in plain text (recorded).",
        )
    idents = {i.name: i for i in (load_identity(f) for f in identity_files(seal_to))}
    roster, out = Roster(store), {}
    for name in custodians:
        ident, member = idents.get(name), roster.get(name)
        if ident is None:
            raise UsageError(
                f"No NAME.pub.json for {name} in {seal}",
                f"Give every custodian's public identity file, or {plain_word}.",
            )
        if member is None or member.public != ident.public or member.alg != ident.alg:
            raise UsageError(
                f"{name}'s NAME.pub.json is not the key enrolled for {name}",
                "Use the file they enrolled with ('custody participant list' shows it).",
            )
        x25519 = ident.encryption_key()  # IntegrityError when the endorsement is forged
        if x25519 is None or ident.x25519_endorsement is None:
            raise UsageError(
                f"{name} has no encryption key to seal to",
                f"A token-held identity has none yet: issue with {plain_word}, or ask them "
                "for a passphrase identity from 'custody participant new'.",
            )
        out[name] = {"x25519": x25519.hex(), "endorsement": ident.x25519_endorsement.hex()}
    return {"seal_to": out}
