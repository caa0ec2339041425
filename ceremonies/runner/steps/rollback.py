"""Rollback of an unfinished ceremony (before its commit step).

Owns :func:`rollback`: it destroys the root versions this ceremony created on the token
(and, for recover, those it imported), removes the files it issued, deletes the held
ciphertexts from the store row and destroys the hold key that sealed them (shares and
offer keys), and deletes a drill's scratch token. It returns what it undid, as public text
for the ``rollback.done`` event; what it could not destroy goes to
``runner.not_destroyed``, which the runner records there too. The runner refuses the
rollback beforehand (:class:`~ceremonies.runner.TokenNeeded`) when the ceremony holds
token objects and the token is not open, so nothing is silently left behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ceremonies.runner.held import drop_held
from ceremonies.runner.steps.drill import _delete_scratch
from custody.errors import HsmError, KeyNotFound
from custody.keys.hierarchy import ROOT_LABEL

if TYPE_CHECKING:
    from ceremonies.runner import CeremonyRunner


def keys_to_destroy(r: CeremonyRunner) -> list[int]:
    """Root versions a rollback of *r* destroys on the token (it created them, and the store
    does not record them; recover destroys what it imported)."""
    recorded = {x.version for x in r.dep.store.roots()}
    return [
        v
        for v in r.pending.get("created_keys", [])
        if r.state.kind == "recover" or v not in recorded
    ]


def rollback(r: CeremonyRunner) -> list[str]:
    """Undo what an unfinished ceremony created. Returns what was undone (public)."""
    undone: list[str] = []
    if r.state.committed:
        return undone
    hsm = r.dep.hsm
    for v in keys_to_destroy(r):
        if hsm is None:  # the runner refused before; never drop it silently
            r.not_destroyed.append(f"root/v{v} (the token was not open)")
            continue
        try:
            hsm.destroy_key(ROOT_LABEL, v)
            undone.append(f"destroyed root/v{v} on the token")
        except KeyNotFound:
            pass
        except HsmError as exc:
            r.not_destroyed.append(f"root/v{v}: {exc.title}")
    for f in r.pending.get("files", []):
        for p in (Path(f), Path(f + ".tmp")):
            if p.exists():
                p.unlink()
                undone.append(f"removed {p.name}")
    undone += drop_held(r, None)
    if _delete_scratch(r):  # a scratch token already gone is not an error
        undone.append("destroyed the scratch token")
    return undone
