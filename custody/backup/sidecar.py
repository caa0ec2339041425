"""The checkpoint sidecar of a full backup re-key (``FILE.rekey-state``).

Two fixed-size checksummed slots, overwritten alternately: how many chunks of the new file
are durable (:mod:`custody.backup.rekey`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from custody.backup.archive import write_all
from custody.privatefile import private_file

SLOT = 512


def read_state(state: Path) -> dict[str, object] | None:
    """The newest intact record of a checkpoint sidecar, or ``None`` (missing or torn)."""
    try:
        raw = state.read_bytes()
    except OSError:
        return None
    best: dict[str, object] | None = None
    for k in range(2):
        body, _, check = raw[k * SLOT : (k + 1) * SLOT].rstrip(b" ").rpartition(b"\n")
        if not body or hashlib.sha256(body).hexdigest().encode() != check:
            continue
        try:
            doc = json.loads(body)
        except ValueError:
            continue
        if isinstance(doc, dict) and (best is None or int(doc["seq"]) > int(str(best["seq"]))):
            best = doc
    return best


class Sidecar:
    """The checkpoint sidecar: two fixed-size checksummed slots, overwritten alternately.

    Overwriting in place needs no new disk blocks, so a checkpoint still lands when the disk
    has just filled up; a torn write spoils only the older slot (:func:`read_state`).
    """

    def __init__(self, path: Path, doc: dict[str, object], *, fresh: bool) -> None:
        self.doc = {**doc, "seq": int(str(doc.get("seq", 0)))}
        if fresh:
            with private_file(path) as fd:  # a fresh temp name, never through a link
                write_all(fd, self._record() * 2)
        self.fd = os.open(path, os.O_RDWR)

    def _record(self) -> bytes:
        body = json.dumps(self.doc, sort_keys=True).encode()
        rec = body + b"\n" + hashlib.sha256(body).hexdigest().encode()
        if len(rec) > SLOT:
            raise ValueError("checkpoint record too long")
        return rec.ljust(SLOT, b" ")

    def save(self, chunks_done: int) -> None:
        seq = int(str(self.doc["seq"])) + 1
        self.doc = {**self.doc, "seq": seq, "chunks_done": chunks_done}
        os.pwrite(self.fd, self._record(), (seq % 2) * SLOT)
        os.fdatasync(self.fd)

    def close(self) -> None:
        os.close(self.fd)
