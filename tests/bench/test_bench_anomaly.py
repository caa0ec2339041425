"""The planted-anomaly benchmark, small: its labels are right, its history goes through a
real audit log and ``scan`` like any other, and the detector's recall clears a floor that a
detector missing any rule kind does not."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from bench.bench_anomaly import DAY, OUT_KINDS, T0, Params, detect, evaluate, generate
from custody.audit.log import AuditLog
from custody.monitor import KINDS, Detector, MonitorConfig, list_alerts, parse_config, scan

SMALL = Params(seed=3, weeks=4, train_weeks=2, services=3, people=8, per_kind=2, out_of_family=2)


@pytest.fixture(scope="module")
def hist():
    return generate(SMALL)


def test_the_generator_is_seeded_and_its_labels_name_the_planted_entries(hist):
    again = generate(SMALL)
    assert list(again.entries()) == list(hist.entries())
    assert list(generate(replace(SMALL, seed=4)).entries()) != list(hist.entries())
    entries = {e["seq"]: e for e in hist.entries()}
    test_start = T0 + SMALL.train_weeks * 7 * DAY
    assert sorted({p.kind for p in hist.planted}) == sorted((*KINDS, *OUT_KINDS))
    assert len(hist.planted) == (len(KINDS) + len(OUT_KINDS)) * 2
    for p in hist.planted:
        es = [entries[s] for s in sorted(p.seqs)]
        assert es and all(e["time"] >= test_start - DAY for e in es)
        mine = [e for e in es if e["actor"] == p.actor]
        assert mine, p
        if p.kind == "old-version":
            assert any(e["details"].get("label") == "previous" for e in mine)
        if p.kind == "revoked-credential":
            assert {e["outcome"] for e in mine} == {"intent", "denied"}
        if p.kind == "soft-delete-read":
            assert {e["op"] for e in es} >= {"secret delete", "secret alert", "secret restore"}
        if p.kind == "failed-burst":
            assert sum(e["outcome"] == "denied" for e in mine) >= 6
    # nothing planted is normal, and most entries are normal
    planted = set().union(*(p.seqs for p in hist.planted))
    assert len(planted) < hist.size / 10


def test_recall_clears_a_floor_and_a_detector_missing_a_kind_does_not(hist):
    good = evaluate(hist, list(detect(hist)), None)
    assert good["detection"] >= 0.8 and good["precision"] >= 0.6
    assert good["fpr_principal_days"] < 0.05
    for kind in ("old-version", "revoked-credential", "soft-delete-read", "failed-burst"):
        assert good["rules"][kind]["recall"] == 1.0, kind
    for kind in KINDS:
        off = parse_config({"rules": {kind: {"enabled": False}}})
        broken = evaluate(hist, list(detect(hist, off)), None)
        assert broken["rules"][kind]["recall"] in (0.0, None), kind
        assert broken["detection"] <= good["detection"]
    nothing = evaluate(hist, [], 10)
    assert nothing["detection"] == 0 and nothing["precision"] is None


def test_the_history_scans_the_same_through_a_real_audit_log(hist, tmp_path):
    log = AuditLog(tmp_path / "audit.db", durable=False)
    try:
        for e in hist.entries():
            log.append(
                e["op"], e["target"], e["actor"], outcome=e["outcome"], details=e["details"],
                now=e["time"],
            )  # fmt: skip
        res = scan(log, tmp_path / "state.json", MonitorConfig(), actor="m", classes=hist.classes)
        assert res.start == 0 and res.end == hist.size
        in_memory = sorted(a.id for a in detect(hist))
        assert sorted(a.id for a in res.alerts) == in_memory
        assert sorted(r.id for r in list_alerts(log)) == in_memory
    finally:
        log.close()


def test_a_detector_resumed_from_its_saved_state_at_any_point_raises_the_same(hist):
    once = [a.id for a in detect(hist)]
    cfg = MonitorConfig()
    det, got = Detector(cfg, classes=hist.classes), []
    for i, e in enumerate(hist.entries()):
        if i % 997 == 0:  # stop, save through JSON as a scan does, and start a new detector
            det = Detector(cfg, classes=hist.classes, state=json.loads(json.dumps(det.dump())))
        got += [a.id for a in det.feed(e)]
    assert got == once and len(once) > 10
