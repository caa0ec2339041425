"""Hypothesis: random single-byte flips and random line operations are always detected."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ceremonies.transcript import BundleData, load_bundle, verify_bundle
from ceremonies.transcript.bundle import load_archive_bytes
from ceremonies.transcript.pins import load_pins
from custody.errors import TranscriptError
from tests.conftest import FIXTURES

FX = FIXTURES / "transcripts"
TRUST = load_pins((FX / "trust" / "pins.json").read_bytes())
GOLDEN = {n: load_bundle(FX / "golden" / n) for n in ("rotate-root", "drill-exception")}
TAR = (FX / "golden" / "rotate-root.tar").read_bytes()
FILES = ("policy", "events", "checkpoints", "artifact")


def _with(data: BundleData, part: str, raw: bytes) -> BundleData:
    if part == "artifact":
        (name, _), *rest = data.artifacts
        return BundleData(
            policy=data.policy,
            events=data.events,
            checkpoints=data.checkpoints,
            artifacts=((name, raw), *rest),
        )
    fields: dict[str, Any] = {
        "policy": data.policy,
        "events": data.events,
        "checkpoints": data.checkpoints,
    }
    fields[part] = raw
    return BundleData(**fields, artifacts=data.artifacts)


def _get(data: BundleData, part: str) -> bytes:
    return data.artifacts[0][1] if part == "artifact" else getattr(data, part)


def test_golden_in_memory_passes() -> None:
    for data in GOLDEN.values():
        assert verify_bundle(data, TRUST).ok


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(GOLDEN)), st.sampled_from(FILES), st.data())
def test_single_byte_flip_detected(name: str, part: str, data: st.DataObject) -> None:
    bundle = GOLDEN[name]
    if part == "artifact" and not bundle.artifacts:
        part = "events"
    raw = bytearray(_get(bundle, part))
    i = data.draw(st.integers(0, len(raw) - 1), label="offset")
    raw[i] ^= data.draw(st.integers(1, 255), label="xor")
    assert not verify_bundle(_with(bundle, part, bytes(raw)), TRUST).ok


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_archive_byte_flip_detected(data: st.DataObject) -> None:
    raw = bytearray(TAR)
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    try:
        bundle = load_archive_bytes(bytes(raw))
    except TranscriptError:
        return  # not even an archive any more: detected
    assert not verify_bundle(bundle, TRUST).ok


OPS = ("delete", "duplicate", "swap", "move", "truncate", "insert-foreign")


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(sorted(GOLDEN)),
    st.sampled_from(("events", "checkpoints")),
    st.sampled_from(OPS),
    st.data(),
)
def test_line_operations_detected(name: str, part: str, op: str, data: st.DataObject) -> None:
    bundle = GOLDEN[name]
    lines = _get(bundle, part).splitlines(keepends=True)
    n = len(lines)
    i = data.draw(st.integers(0, n - 1), label="i")
    if op == "delete":
        lines.pop(i)
    elif op == "duplicate":
        lines.insert(data.draw(st.integers(0, n), label="at"), lines[i])
    elif op == "swap":
        j = data.draw(st.integers(0, n - 1).filter(lambda j: j != i), label="j")
        lines[i], lines[j] = lines[j], lines[i]
    elif op == "move":
        ln = lines.pop(i)
        j = data.draw(st.integers(0, n - 1).filter(lambda j: j != i), label="j")
        lines.insert(j, ln)
    elif op == "truncate":
        lines = lines[:i]
    else:
        other = GOLDEN["drill-exception" if name == "rotate-root" else "rotate-root"]
        foreign = _get(other, part).splitlines(keepends=True)
        lines.insert(i, foreign[data.draw(st.integers(0, len(foreign) - 1), label="f")])
    assert not verify_bundle(_with(bundle, part, b"".join(lines)), TRUST).ok


def test_every_policy_signature_entry_is_checked() -> None:
    """A policy signature entry whose name, key id or bytes changed fails the bundle, even
    when the entry would not have counted anyway (found by the byte-flip property above: a
    flipped signer label in an ignored entry used to leave the bundle VALID)."""
    import json

    from custody.canonical import canonical_bytes

    for name, bundle in GOLDEN.items():
        doc = json.loads(bundle.policy)
        assert doc["signatures"], name
        for i in range(len(doc["signatures"])):
            for field, value in (
                ("signer", "mallory"),
                ("keyid", "0" * len(doc["signatures"][i]["keyid"])),
                ("sig", "00" * (len(doc["signatures"][i]["sig"]) // 2)),
            ):
                bad = json.loads(bundle.policy)
                bad["signatures"][i][field] = value
                raw = canonical_bytes(bad)
                if bundle.policy.endswith(b"\n"):
                    raw += b"\n"
                rep = verify_bundle(_with(bundle, "policy", raw), TRUST)
                assert not rep.ok, (name, i, field)


@pytest.mark.slow
def test_every_single_bit_flip_of_a_policy_is_detected() -> None:
    """Exhaustive, not sampled: flipping the low bit of any byte of either golden policy
    fails the bundle (every byte of policy.json is signed, or checked against the roster)."""
    for name, bundle in GOLDEN.items():
        raw = bundle.policy
        missed = []
        for i in range(len(raw)):
            bad = bytearray(raw)
            bad[i] ^= 0x01
            if verify_bundle(_with(bundle, "policy", bytes(bad)), TRUST).ok:
                missed.append(i)
        assert missed == [], (name, missed[:10])
