"""Golden and tampered transcript bundles: each tampering fails its expected check."""

from __future__ import annotations

import filecmp
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from ceremonies.transcript import (
    CHECK_IDS,
    SignedPolicy,
    load_bundle,
    parse_trust_key,
    to_archive,
    verify_bundle,
)
from ceremonies.transcript.pins import load_pins
from ceremonies.transcript.records import Checkpoint, Event
from custody.errors import PolicyError
from tests.conftest import FIXTURES
from tests.fixtures import make_transcripts  # the generator script lives in tests/fixtures

FX = FIXTURES / "transcripts"

TRUST = load_pins((FX / "trust" / "pins.json").read_bytes())
GOLDEN = ["rotate-root", "drill-exception", "two-admins", "rotate-root.tar"]
CHAINS = json.loads((FX / "chains.json").read_text())


def verify_fixture(rel: str, **kw):
    """Verify a fixture with the pins (and previous bundle) chains.json gives it."""
    pins, prev = CHAINS.get(rel, ["pins.json", None])
    trust = load_pins((FX / "trust" / pins).read_bytes())
    return verify_bundle(FX / rel, trust, prev=FX / prev if prev else None, **kw)


@dataclass(frozen=True)
class Case:
    name: str
    check: str


CASES = [Case(k, v) for k, v in sorted(json.loads((FX / "cases.json").read_text()).items())]


def test_every_issue_kind_has_a_fixture() -> None:
    names = {c.name for c in CASES}
    assert {
        "flip-event",
        "flip-policy",
        "flip-checkpoint",
        "reordered",
        "dropped-middle",
        "duplicated",
        "truncated-tail",
        "forged-signature",
        "double-counted-signature",
        "spliced-event",
        "replayed-approval",
        "stale-approval",
        "below-threshold",
        "not-enrolled",
        "outside-role",
        "expired-key",
        "revoked-key",
        "swapped-artifact",
    } <= names
    assert {c.check for c in CASES} <= set(CHECK_IDS)


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_passes(name: str) -> None:
    report = verify_fixture(f"golden/{name}")
    assert report.ok, report.text()
    assert [r.id for r in report.results] == list(CHECK_IDS)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_tampered_fails_expected_check(case: Case) -> None:
    report = verify_fixture(f"tampered/{case.name}")
    assert not report.ok
    assert case.check in report.failed, report.text()
    assert report.result(case.check).problems


def test_quorum_output_names_participants() -> None:
    notes = verify_bundle(FX / "golden" / "rotate-root", TRUST).result("quorum").notes
    assert "rotate-root a17: 3/3 custodians (alice, bob, carol)" in notes


def test_only_pinned_keys_count() -> None:
    """Issue 11 changed this: a key pinned without a role (bare hex) or in another role no
    longer makes a policy count, and unpinned approvers count toward no quorum."""
    others = [k for k in TRUST if k.name != "dave"]
    for trust in ([], others):
        r = verify_bundle(FX / "golden" / "rotate-root", trust)
        assert "policy-signatures" in r.failed
    hexkey = parse_trust_key((FX / "trust" / "dave.hex").read_bytes(), default_name="dave")
    assert hexkey.role is None
    r = verify_bundle(FX / "golden" / "rotate-root", [hexkey, *others])
    assert "policy-signatures" in r.failed, r.text()
    assert "ignored dave: pinned without a role" in r.result("policy-signatures").problems
    assert not verify_bundle(FX / "golden" / "rotate-root", TRUST, min_policy_signatures=2).ok
    dave = load_pins((FX / "trust" / "dave.json").read_bytes())
    r = verify_bundle(FX / "golden" / "rotate-root", dave)
    assert set(r.failed) == {"quorum", "completeness"}
    assert "ignored: alice (not pinned), bob (not pinned), carol (not pinned)" in (
        r.result("quorum").detail
    )


@pytest.mark.parametrize("name", ["rotate-root", "drill-exception"])
def test_golden_round_trips_byte_for_byte(name: str) -> None:
    d = FX / "golden" / name
    raw = (d / "policy.json").read_bytes()
    assert SignedPolicy.from_json(json.loads(raw)).to_bytes() == raw
    for fname, cls in (("events.jsonl", Event), ("checkpoints.jsonl", Checkpoint)):
        raw = (d / fname).read_bytes()
        again = b"".join(cls.from_json(json.loads(ln)).to_line() + b"\n" for ln in raw.splitlines())
        assert again == raw


def test_archive_round_trips() -> None:
    tar = (FX / "golden" / "rotate-root.tar").read_bytes()
    data = load_bundle(FX / "golden" / "rotate-root.tar")
    assert not data.problems
    assert to_archive(data) == tar == to_archive(load_bundle(FX / "golden" / "rotate-root"))


def test_regenerating_reproduces_committed_fixtures(tmp_path: Path) -> None:
    out = tmp_path / "transcripts"
    make_transcripts.build_all(out)
    # git keeps no empty directories (an event-less bundle's artifacts/), so neither do we
    for d in sorted(out.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()
    cmp = filecmp.dircmp(FX, out)

    def same(c: filecmp.dircmp) -> None:
        assert not c.left_only and not c.right_only, (c.left_only, c.right_only)
        _, mismatch, errors = filecmp.cmpfiles(c.left, c.right, c.common_files, shallow=False)
        assert not mismatch and not errors, mismatch
        for sub in c.subdirs.values():
            same(sub)

    same(cmp)


@pytest.mark.parametrize("variant", sorted(make_transcripts.PIN_CASES))
def test_recorder_without_pins_writes_what_only_pins_reject(variant: str, tmp_path: Path) -> None:
    """The recorder trusts its own signed policy; only the auditor's pins catch these."""
    make_transcripts.rotate_ceremony(tmp_path / "b", variant, checked=True)
    pins = CHAINS.get(f"tampered/{variant}", ["pins.json"])[0]
    assert not verify_bundle(tmp_path / "b", load_pins((FX / "trust" / pins).read_bytes())).ok


@pytest.mark.parametrize("variant", sorted(make_transcripts.SEMANTIC_CASES))
def test_recorder_refuses_what_verifier_rejects(variant: str, tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as ei:
        make_transcripts.rotate_ceremony(tmp_path / "b", variant, checked=True)
    assert "Refused to record" in ei.value.title


def test_unsigned_bytes_shortcut_matches_full_serialisation() -> None:
    for name in ("rotate-root", "drill-exception"):
        for ln in (FX / "golden" / name / "events.jsonl").read_bytes().splitlines():
            fast = Event.from_canonical_line(ln, json.loads(ln))
            slow = Event.from_json(json.loads(ln))
            assert fast.unsigned_bytes is not None
            assert fast.signing_input("00" * 16) == slow.signing_input("00" * 16)
