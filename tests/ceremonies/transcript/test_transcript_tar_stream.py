"""A ``.tar`` bundle is verified streaming (``scan_archive``: member by member, headers,
padding and end blocks checked against what ``to_archive`` writes) and gives the verdict of
the directory form, and exactly the report of the whole-archive reader
``load_archive_bytes``, for a valid bundle and for tampered ones."""

from __future__ import annotations

import io
import json
import random
import shutil
import tarfile
from pathlib import Path

import pytest

from ceremonies.transcript import load_bundle, verify_bundle
from ceremonies.transcript.bundle import (
    CHECKPOINTS,
    EVENTS,
    POLICY,
    BundleData,
    load_archive_bytes,
    open_bundle,
    to_archive,
)
from ceremonies.transcript.pins import load_pins
from custody.errors import TranscriptError
from tests.conftest import FIXTURES

FX = FIXTURES / "transcripts"
TRUST = load_pins((FX / "trust" / "pins.json").read_bytes())
GOLDEN = FX / "golden" / "rotate-root"
DATA = load_bundle(GOLDEN)
TAR = to_archive(DATA)


def _members(data: BundleData) -> list[tuple[str, bytes]]:
    out = [(POLICY, data.policy), (EVENTS, data.events), (CHECKPOINTS, data.checkpoints)]
    return sorted(out + [(f"artifacts/{n}", b) for n, b in data.artifacts])


def _tar(
    members: list[tuple[str, bytes]], fmt: int = tarfile.USTAR_FORMAT, mtime: int = 0
) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:", format=fmt) as tf:
        for name, blob in members:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime, ti.mode, ti.uid, ti.gid = len(blob), mtime, 0o644, 0, 0
            ti.uname = ti.gname = ""
            tf.addfile(ti, io.BytesIO(blob))
    return out.getvalue()


def _flip(raw: bytes, at: int) -> bytes:
    b = bytearray(raw)
    b[at] ^= 0x01
    return bytes(b)


def _verdicts(tmp_path: Path, raw: bytes) -> tuple[str, str]:
    """The report of the streaming reader and of the whole-archive reader (as JSON), or
    ``"unreadable"`` for each that refuses the file."""
    f = tmp_path / "b.tar"
    f.write_bytes(raw)
    try:
        streamed = json.dumps(verify_bundle(f, TRUST).to_json())
    except TranscriptError:
        streamed = "unreadable"
    try:
        whole = json.dumps(verify_bundle(load_archive_bytes(raw), TRUST).to_json())
    except TranscriptError:
        whole = "unreadable"
    return streamed, whole


def _dir_verdict(tmp_path: Path, data: BundleData, extra: dict[str, bytes] | None = None) -> str:
    d = tmp_path / "d"
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(GOLDEN, d)
    (d / EVENTS).write_bytes(data.events)
    for name, blob in (extra or {}).items():
        (d / name).write_bytes(blob)
    return verify_bundle(d, TRUST).verdict()


def test_valid_tar_same_verdict_as_directory(tmp_path: Path) -> None:
    streamed, whole = _verdicts(tmp_path, TAR)
    assert streamed == whole
    f = tmp_path / "b.tar"
    assert verify_bundle(f, TRUST).verdict() == _dir_verdict(tmp_path, DATA) == "verdict: VALID"
    assert verify_bundle(f, TRUST).to_json() == verify_bundle(GOLDEN, TRUST).to_json()


def test_event_byte_flipped_same_verdict_as_directory(tmp_path: Path) -> None:
    at = TAR.index(DATA.events) + len(DATA.events) // 2
    raw = _flip(TAR, at)
    streamed, whole = _verdicts(tmp_path, raw)
    assert streamed == whole
    report = verify_bundle(tmp_path / "b.tar", TRUST)
    assert not report.ok and "chain" in report.failed
    flipped = _flip(DATA.events, len(DATA.events) // 2)
    d = BundleData(policy=DATA.policy, events=flipped, checkpoints=DATA.checkpoints)
    assert report.verdict() == _dir_verdict(tmp_path, d)


def test_member_appended_same_verdict_as_directory(tmp_path: Path) -> None:
    raw = _tar([*_members(DATA), ("zz-extra", b"hello\n")])
    streamed, whole = _verdicts(tmp_path, raw)
    assert streamed == whole
    report = verify_bundle(tmp_path / "b.tar", TRUST)
    assert report.verdict() == _dir_verdict(tmp_path, DATA, {"zz-extra": b"hello\n"})
    assert tuple(report.failed) == ("canonical",)
    assert "unexpected archive member zz-extra" in streamed


# Tamperings of the container alone, which a directory cannot express: each must fail
# ``canonical`` (or be unreadable) exactly as the whole-archive reader says.
def _reordered() -> bytes:
    m = _members(DATA)
    return _tar([m[-1], *m[:-1]])


def _dup_events() -> bytes:
    return _tar(sorted([*_members(DATA), (EVENTS, DATA.events)]))


def _end_block_flipped() -> bytes:
    return _flip(TAR, len(TAR) - 700)


def _header_flipped() -> bytes:
    return _flip(TAR, TAR.index(EVENTS.encode()) + 108)  # the mode field


def _padding_flipped() -> bytes:
    return _flip(TAR, TAR.index(DATA.events) + len(DATA.events))


TAMPERED = {
    "reordered": _reordered,
    "trailing-garbage": lambda: TAR + b"garbage",
    "trailing-zero-record": lambda: TAR + bytes(tarfile.RECORDSIZE),
    "end-blocks-cut": lambda: TAR[: len(TAR) - len(TAR) % tarfile.RECORDSIZE - 1024],
    "end-block-flipped": _end_block_flipped,
    "padding-flipped": _padding_flipped,
    "header-mode-flipped": _header_flipped,
    "duplicate-events": _dup_events,
    "gnu-format": lambda: _tar(_members(DATA), tarfile.GNU_FORMAT),
    "mtime-set": lambda: _tar(_members(DATA), mtime=1),
    "events-missing": lambda: _tar([m for m in _members(DATA) if m[0] != EVENTS]),
    "truncated-in-events": lambda: TAR[: TAR.index(DATA.events) + 100],
    "empty": lambda: b"",
}


@pytest.mark.parametrize("how", sorted(TAMPERED))
def test_container_tampering_same_report_as_whole_archive(tmp_path: Path, how: str) -> None:
    raw = TAMPERED[how]()
    streamed, whole = _verdicts(tmp_path, raw)
    assert streamed == whole
    if streamed != "unreadable":
        report = verify_bundle(tmp_path / "b.tar", TRUST)
        assert not report.ok and "canonical" in report.failed, how
    if how in ("reordered", "trailing-garbage", "padding-flipped", "end-block-flipped"):
        assert '"archive is not in the canonical container form"' in streamed
    if how in ("truncated-in-events", "empty"):
        assert streamed == "unreadable"


def test_random_byte_flips_and_cuts_agree_with_whole_archive(tmp_path: Path) -> None:
    rnd = random.Random(14)
    cases = [TAR[:n] for n in range(0, len(TAR), 509)]
    cases += [_flip(TAR, rnd.randrange(len(TAR))) for _ in range(150)]
    f = tmp_path / "b.tar"
    for raw in cases:
        f.write_bytes(raw)
        try:
            src = open_bundle(f)
            with src.events() as ev, src.checkpoints() as cp:
                got: object = (src.problems, src.policy, ev.read(), cp.read(), src.artifacts)
        except TranscriptError:
            got = "unreadable"
        try:
            d = load_archive_bytes(raw)
            want: object = (d.problems, d.policy, d.events, d.checkpoints, d.artifacts)
        except TranscriptError:
            want = "unreadable"
        assert got == want
        if raw != TAR and got != "unreadable":
            assert got != ((), DATA.policy, DATA.events, DATA.checkpoints, DATA.artifacts)


def test_archive_rewritten_during_verify_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "b.tar"
    f.write_bytes(TAR)
    src = open_bundle(f)
    f.write_bytes(_flip(TAR, TAR.index(DATA.events) + 10))  # same size, new content
    with pytest.raises(TranscriptError):
        src.events()


def test_archive_rewritten_while_its_events_are_read_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "b.tar"
    f.write_bytes(TAR)
    src = open_bundle(f)
    with src.events() as ev:
        ev.read(10)
        with open(f, "r+b") as fh:  # in place: same inode and size
            fh.seek(TAR.index(DATA.events) + 20)
            fh.write(b"X")
        with pytest.raises(OSError, match="changed"):
            ev.read()
    with pytest.raises(TranscriptError):
        verify_bundle(src, TRUST)


@pytest.mark.parametrize("second", ["same", "other"])
def test_an_artifact_name_held_twice_is_refused_by_both_readers(
    tmp_path: Path, second: str
) -> None:
    """Two members ``artifacts/NAME`` in sorted order were once canonical (``to_archive``
    wrote them both) and the later one won: a reader keeping the first would see another
    artifact. Both readers now refuse the archive, whatever the second one holds."""
    assert DATA.artifacts, "the golden bundle has artifacts"
    name, blob = DATA.artifacts[0]
    twin = blob if second == "same" else blob + b"\n"
    raw = _tar(sorted([*_members(DATA), (f"artifacts/{name}", twin)]))
    want = f"archive member artifacts/{name} appears more than once"
    assert want in load_archive_bytes(raw).problems
    f = tmp_path / "b.tar"
    f.write_bytes(raw)
    assert want in open_bundle(f).problems
    streamed, whole = _verdicts(tmp_path, raw)
    assert streamed == whole and want in streamed
