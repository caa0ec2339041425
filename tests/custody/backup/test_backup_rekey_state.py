"""The full re-key checkpoint sidecar: newest intact slot wins, torn slots are ignored."""

from __future__ import annotations

from pathlib import Path

from custody.backup.sidecar import SLOT as _SLOT
from custody.backup.sidecar import Sidecar as _State
from custody.backup.sidecar import read_state

DOC: dict[str, object] = {"src_digest": "aa", "tmp_digest": "bb", "chunks_done": 0}


def test_newest_slot_wins_and_a_torn_one_falls_back(tmp_path: Path) -> None:
    p = tmp_path / "f.rekey-state"
    st = _State(p, DOC, fresh=True)
    try:
        st.save(16)
        st.save(32)  # seq 2, slot 0; slot 1 still holds seq 1 (16 chunks)
    finally:
        st.close()
    assert read_state(p) == {**DOC, "seq": 2, "chunks_done": 32}
    raw = bytearray(p.read_bytes())
    assert len(raw) == 2 * _SLOT
    raw[5] ^= 1  # tear the newer slot
    p.write_bytes(bytes(raw))
    assert read_state(p) == {**DOC, "seq": 1, "chunks_done": 16}
    raw[_SLOT + 5] ^= 1
    p.write_bytes(bytes(raw))
    assert read_state(p) is None
    assert read_state(tmp_path / "missing") is None


def test_resume_continues_the_sequence(tmp_path: Path) -> None:
    p = tmp_path / "f.rekey-state"
    _State(p, DOC, fresh=True).close()
    doc = read_state(p)
    assert doc is not None and doc["seq"] == 0
    st = _State(p, doc, fresh=False)
    st.save(8)
    st.close()
    assert read_state(p) == {**DOC, "seq": 1, "chunks_done": 8}
