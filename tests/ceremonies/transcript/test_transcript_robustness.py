"""The verifier reports a damaged bundle as failing checks; it never raises on one.

Regression: a single flipped bit inside an event's ceremony id once escaped the quorum rule
as a FormatError instead of failing a check (found by the byte-flip property test)."""

from __future__ import annotations

from ceremonies.transcript import BundleData, load_bundle, verify_bundle
from ceremonies.transcript.pins import load_pins
from tests.conftest import FIXTURES

FX = FIXTURES / "transcripts"
TRUST = load_pins((FX / "trust" / "pins.json").read_bytes())


def _flip(data: BundleData, offset: int) -> BundleData:
    raw = bytearray(data.events)
    raw[offset] ^= 1
    return BundleData(
        policy=data.policy,
        events=bytes(raw),
        checkpoints=data.checkpoints,
        artifacts=data.artifacts,
    )


def _offsets(events: bytes) -> list[int]:
    """Every byte of every id-like hex value (where the crash lived), plus a stride sample."""
    text = events.decode()
    hot: set[int] = set()
    for key in ('"ceremony":"', '"action_id":"', '"prev":"'):
        at = text.find(key)
        while at != -1:
            start = at + len(key)
            hot.update(range(start, text.index('"', start)))
            at = text.find(key, start)
    return sorted(hot | set(range(0, len(events), 13)))


def test_bit_flips_in_the_events_are_failing_reports_never_crashes():
    """Before the fix, 15 single-bit flips of the golden rotate-root events (all inside
    ceremony ids) made verify_bundle raise FormatError instead of returning a report."""
    golden = load_bundle(FX / "golden" / "rotate-root")
    offsets = _offsets(golden.events)
    assert len(offsets) > 500
    for offset in offsets:
        rep = verify_bundle(_flip(golden, offset), TRUST)
        assert not rep.ok, offset
