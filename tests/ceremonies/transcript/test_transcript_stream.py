"""Streaming ``transcript verify``: a directory bundle is read line by line from the disk,
each line parsed once, with progress; tampered bundles still fail, and a directory, its
in-memory bytes and its archive give the same report. (Memory flatness is measured in
``bench/bench_transcript.py --memory``, not here.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ceremonies.transcript import checks, load_bundle, verify_bundle
from ceremonies.transcript.bundle import load_archive_bytes, open_bundle, to_archive
from ceremonies.transcript.pins import load_pins
from tests.conftest import FIXTURES

FX = FIXTURES / "transcripts"
TRUST = load_pins((FX / "trust" / "pins.json").read_bytes())
GOLDEN = FX / "golden" / "rotate-root"


def _copy(tmp_path: Path) -> Path:
    d = tmp_path / "b"
    shutil.copytree(GOLDEN, d)
    return d


def _lines(p: Path) -> list[bytes]:
    return p.read_bytes().split(b"\n")[:-1]


def _tamper(d: Path, how: str) -> str:
    """Damage the bundle directory *d*; returns a check id that must fail."""
    ev, cp = d / "events.jsonl", d / "checkpoints.jsonl"
    lines = _lines(ev)
    if how == "flip":
        raw = bytearray(ev.read_bytes())
        raw[len(raw) // 2] ^= 0x01
        ev.write_bytes(bytes(raw))
        return "chain"  # the next event's prev no longer names it
    if how == "truncate":
        ev.write_bytes(b"\n".join(lines[:-1]) + b"\n")
        return "completeness"
    if how == "swap":
        lines[2], lines[3] = lines[3], lines[2]
        ev.write_bytes(b"\n".join(lines) + b"\n")
        return "chain"
    if how == "no-newline":
        ev.write_bytes(ev.read_bytes()[:-1])
        return "canonical"
    if how == "empty-line":
        lines.insert(2, b"")
        ev.write_bytes(b"\n".join(lines) + b"\n")
        return "canonical"
    if how == "drop-checkpoints":
        cp.unlink()
        return "completeness"
    if how == "last-checkpoint":
        cps = _lines(cp)
        cp.write_bytes(b"\n".join(cps[:-1]) + b"\n")
        return "completeness"
    if how == "checkpoint-root":
        blob = cp.read_bytes()
        i = blob.index(b'"root":"') + 8
        cp.write_bytes(blob[:i] + (b"0" if blob[i : i + 1] != b"0" else b"1") + blob[i + 1 :])
        return "checkpoints"
    raise AssertionError(how)


HOW = (
    "flip",
    "truncate",
    "swap",
    "no-newline",
    "empty-line",
    "drop-checkpoints",
    "last-checkpoint",
    "checkpoint-root",
)


def test_a_directory_its_bytes_and_its_archive_give_one_report(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    streamed = verify_bundle(d, TRUST)
    assert streamed.ok, streamed.text()
    data = load_bundle(d)
    assert verify_bundle(data, TRUST).to_json() == streamed.to_json()
    tar = tmp_path / "b.tar"
    tar.write_bytes(to_archive(data))
    assert verify_bundle(tar, TRUST).to_json() == streamed.to_json()
    assert verify_bundle(load_archive_bytes(tar.read_bytes()), TRUST).ok


@pytest.mark.parametrize("how", HOW)
def test_a_tampered_directory_fails_when_streamed(tmp_path: Path, how: str) -> None:
    d = _copy(tmp_path)
    must_fail = _tamper(d, how)
    rep = verify_bundle(d, TRUST)
    assert not rep.ok and must_fail in rep.failed, (how, rep.text())
    # the same verdict and problems as from the bundle's bytes held in memory
    assert verify_bundle(load_bundle(d), TRUST).to_json() == rep.to_json()


def test_each_line_is_parsed_once_and_progress_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = _copy(tmp_path)
    calls: list[bytes] = []
    real = checks.strict_loads  # type: ignore[attr-defined]

    def counting(raw: bytes | str) -> object:
        calls.append(raw if isinstance(raw, bytes) else raw.encode())
        return real(raw)

    monkeypatch.setattr(checks, "strict_loads", counting)
    monkeypatch.setattr("ceremonies.transcript.verify.PROGRESS_EVERY", 2)
    seen: list[int] = []
    rep = verify_bundle(d, TRUST, progress=seen.append)
    assert rep.ok
    events, cps = _lines(d / "events.jsonl"), _lines(d / "checkpoints.jsonl")
    assert sorted(calls) == sorted([(d / "policy.json").read_bytes(), *events, *cps])
    size = (d / "events.jsonl").stat().st_size
    assert seen == sorted(seen) and seen[-1] == size and len(seen) >= len(events) // 2
    assert open_bundle(d).events_size() == size


def test_an_unreadable_policy_still_parses_every_event(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    (d / "policy.json").write_bytes(b"{")
    lines = _lines(d / "events.jsonl")
    lines[1] = b"not json"
    (d / "events.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    rep = verify_bundle(d, TRUST)
    assert not rep.ok and rep.events == len(lines)
    canon = rep.result("canonical").problems
    assert any("policy.json is not JSON" in p for p in canon)
    assert any("events.jsonl line 2 is not JSON" in p for p in canon)
    assert verify_bundle(load_bundle(d), TRUST).to_json() == rep.to_json()
