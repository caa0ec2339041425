"""Rollback of an unfinished ceremony (before its commit step).

Owns :func:`rollback`: it destroys the root versions this ceremony created on the token
(and, for recover, those it imported), removes the files it issued, destroys the hold key
with the shares and offer keys sealed under it, and deletes a drill's scratch token. It
returns what it undid, as public text for the ``rollback.done`` event.
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


def rollback(r: CeremonyRunner) -> list[str]:
    """Undo what an unfinished ceremony created. Returns what was undone (public)."""
    undone: list[str] = []
    if r.state.committed:
        return undone
    hsm = r.dep.hsm
    recorded = {x.version for x in r.dep.store.roots()}
    for v in r.pending.get("created_keys", []):
        if hsm is None:
            continue
        if r.state.kind == "recover" or v not in recorded:
            try:
                hsm.destroy_key(ROOT_LABEL, v)
                undone.append(f"destroyed root/v{v} on the token")
            except KeyNotFound:
                pass
            except HsmError:
                undone.append(f"could not destroy root/v{v} (token unavailable)")
    for f in r.pending.get("files", []):
        for p in (Path(f), Path(f + ".tmp")):
            if p.exists():
                p.unlink()
                undone.append(f"removed {p.name}")
    if hsm is not None:
        try:
            undone += drop_held(r, None)
        except HsmError:
            undone.append("could not destroy the hold key (token unavailable)")
    if _delete_scratch(r):
        undone.append("destroyed the scratch token")
    return undone
