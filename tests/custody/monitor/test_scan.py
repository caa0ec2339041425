"""Scans: incremental, recorded in the audit log, delivered, and held to the log.

An insider who edits or deletes the state file cannot hide an alert the audit log still
shows; a resumed scan raises exactly what one scan over the whole log raises; alerts name
real entries; acknowledgements are entries too, never by the alert's own principal.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from custody.audit.log import AuditLog
from custody.errors import PolicyError, UsageError
from custody.monitor import Detector, MonitorConfig, ack, list_alerts, parse_config, scan
from custody.monitor.records import RAISED, SCAN
from tests.custody.monitor.traffic import CLASSES, DAY, HOUR, T0, Traffic, baseline, copy_log

MON = T0 + 28 * DAY


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return baseline(tmp_path_factory.mktemp("base") / "audit.db")


@pytest.fixture
def tr(base: Path, tmp_path: Path):
    log = copy_log(base, tmp_path / "home")
    yield Traffic(log)
    log.close()


def do_scan(tr, **kw):
    state = tr.log.path.parent / "monitor-state.json"
    return scan(tr.log, state, MonitorConfig(), actor="monitor", classes=CLASSES, **kw)


def anomaly(tr) -> list[int]:
    """alice reads a high-class secret she never read, on a Saturday at 03:00."""
    return tr.read("alice", "prod:payroll/db", T0 + 33 * DAY + 3 * HOUR)


def ops(log, op):
    return [json.loads(x) for x in log.lines() if json.loads(x)["op"] == op]


def test_alerts_are_recorded_with_real_seqs_and_not_raised_twice(tr):
    first = do_scan(tr)
    assert first.alerts == () and first.start == 0 and first.end > 5000
    seqs = anomaly(tr)
    second = do_scan(tr)
    assert second.start == first.end  # resumed where the last scan stopped
    assert {a.kind for a in second.alerts} == {"first-high", "off-hours"}
    for a in second.alerts:
        assert set(a.seqs) == set(seqs)
        for s in a.seqs:
            e = json.loads(tr.log.lines(s, s + 1)[0])
            assert e["actor"] == "alice" and e["target"] == "prod:payroll/db"
    raised = ops(tr.log, RAISED)
    assert sorted(e["details"]["id"] for e in raised) == sorted(a.id for a in second.alerts)
    assert all(e["details"]["seqs"] == list(seqs) for e in raised)
    assert do_scan(tr).alerts == () and do_scan(tr, full=True).alerts == ()
    assert len(ops(tr.log, RAISED)) == 2
    # nothing but the monitor's own entries since: no new scan entry is written
    n = tr.log.size()
    assert do_scan(tr).scan_seq is None and tr.log.size() == n


def test_an_edited_state_file_cannot_hide_an_alert(tr):
    do_scan(tr)
    anomaly(tr)
    state = tr.log.path.parent / "monitor-state.json"
    doc = json.loads(state.read_text())
    # the insider moves the scan position past their own read (and keeps the file valid JSON)
    doc["next_seq"] = tr.log.size()
    state.write_text(json.dumps(doc))
    res = do_scan(tr)
    assert res.start == 0 and "does not match" in res.rescan
    assert {a.kind for a in res.alerts} == {"first-high", "off-hours"}


def test_a_wiped_baseline_or_a_deleted_state_file_is_rescanned(tr):
    do_scan(tr)
    state = tr.log.path.parent / "monitor-state.json"
    doc = json.loads(state.read_text())
    doc["detector"]["rules"]["off-hours"]["hist"]["alice"][2] = [5] * 168  # "she works nights"
    state.write_text(json.dumps(doc))
    anomaly(tr)
    assert {a.kind for a in do_scan(tr).alerts} == {"first-high", "off-hours"}
    state.unlink()
    again = do_scan(tr)
    assert again.start == 0 and again.alerts == ()  # the log already holds both alerts
    assert len(list_alerts(tr.log)) == 2


def test_a_state_file_of_another_log_is_not_trusted(tr, tmp_path):
    do_scan(tr)
    other = AuditLog(tmp_path / "other.db", durable=False)
    Traffic(other).read("alice", "prod:web/session", MON)
    try:
        res = scan(other, tr.log.path.parent / "monitor-state.json", MonitorConfig(), actor="m")
        assert res.start == 0 and "another log" in res.rescan
    finally:
        other.close()


def test_resumed_scans_raise_what_one_pass_raises(tr):
    cut = []
    for day in (29, 30, 33):  # three scans, with anomalies between them
        tr.read("alice", f"prod:payroll/db{day}", T0 + day * DAY + 11 * HOUR)
        for i in range(6):
            tr.read("bob", f"prod:x/{i}", T0 + day * DAY + 2 * HOUR + i, outcome="denied")
        cut.append(do_scan(tr))
    got = sorted(a.id for r in cut for a in r.alerts)
    det = Detector(MonitorConfig(), classes=CLASSES)
    once = sorted(
        a.id
        for line in tr.log.iter_lines()
        for a in det.feed(json.loads(line))
        if json.loads(line)["op"] not in (RAISED, SCAN)
    )
    assert got == once and len(got) >= 6


def test_delivery_to_the_hook_and_the_alert_file(tr, tmp_path):
    hooked = tmp_path / "hooked.jsonl"
    code = f"import sys; open('{hooked}', 'a').write(sys.stdin.read() + chr(10))"
    hook = f'{sys.executable} -c "{code}"'
    do_scan(tr)
    anomaly(tr)
    res = do_scan(tr, hook=hook, alert_file=tmp_path / "alerts.jsonl")
    assert res.deliveries == ()
    for f in (hooked, tmp_path / "alerts.jsonl"):
        got = [json.loads(x) for x in f.read_text().splitlines() if x]
        assert sorted(g["id"] for g in got) == sorted(a.id for a in res.alerts)
        assert all(g["type"] == "monitor-alert" and g["seqs"] for g in got)
    assert (tmp_path / "alerts.jsonl").stat().st_mode & 0o077 == 0
    # a broken hook is reported, never raised, and the alerts are still in the log
    anomaly2 = tr.read("alice", "prod:billing/db", MON + 3 * DAY + 11 * HOUR)
    res = do_scan(tr, hook="/nonexistent/hook")
    assert res.alerts and "failed to start" in res.deliveries[0]
    assert tuple(anomaly2) in {r.seqs for r in list_alerts(tr.log)}


def test_acknowledgement_is_an_entry_and_never_by_the_principal(tr):
    do_scan(tr)
    anomaly(tr)
    a = do_scan(tr).alerts[0]
    with pytest.raises(PolicyError):
        ack(tr.log, a.id, "alice")
    with pytest.raises(UsageError):
        ack(tr.log, "zz", "carol")
    with pytest.raises(UsageError):
        ack(tr.log, "ffffffffff", "carol")
    rec = ack(tr.log, a.id[:8], "carol", note="payroll audit, approved")
    assert rec.ack is not None and rec.ack["by"] == "carol"
    with pytest.raises(UsageError):
        ack(tr.log, a.id, "dave")
    listed = {r.id: r for r in list_alerts(tr.log)}
    done = listed[a.id].ack
    assert done is not None and done["note"] == "payroll audit, approved"
    assert sum(r.open for r in listed.values()) == 1
    assert [r.id for r in list_alerts(tr.log, rule="off-hours")] != []
    assert list_alerts(tr.log, since=MON + 30 * DAY) == []


def test_the_compliance_report_lists_open_alerts_from_the_log_alone(tr):
    from custody.report.compliance import alerts as alerts_section
    from custody.report.evidence import Evidence

    def section():
        ev = Evidence(
            store={}, log_id=tr.log.log_id, lines=tr.log.lines(), checkpoints=(), source="t"
        )
        return alerts_section(ev)

    assert section()["status"] == "not-available"  # no scan yet: no claim either way
    do_scan(tr)
    assert section()["status"] == "ok" and section()["unscanned_entries"] == 0
    anomaly(tr)
    assert section()["unscanned_entries"] == 2
    raised = do_scan(tr).alerts
    s = section()
    assert s["status"] == "findings"
    assert sorted(i["id"] for i in s["items"]) == sorted(a.id for a in raised)
    ack(tr.log, raised[0].id, "carol")
    assert [i["id"] for i in section()["items"]] == [raised[1].id]


def test_an_insider_who_exempts_themselves_shows_in_the_audit_log(tr):
    do_scan(tr)
    state = tr.log.path.parent / "monitor-state.json"
    quiet = parse_config(
        {"rules": {"first-high": {"exempt": ["alice"]}, "off-hours": {"enabled": False}}}
    )
    anomaly(tr)
    res = scan(tr.log, state, quiet, actor="alice", classes=CLASSES)
    assert res.alerts == () and res.rules_changed  # the rules they changed are silent...
    assert res.start == 0 and "rules changed" in res.rescan
    [entry] = [e for e in ops(tr.log, SCAN) if e["seq"] == res.scan_seq]
    assert entry["details"]["rules_changed"] and entry["actor"] == "alice"
    assert entry["details"]["exempt"] == {"first-high": ["alice"]}
    assert entry["details"]["disabled"] == ["off-hours"]  # ...and the log says so
    assert entry["details"]["not_default"] == {
        "rules.first-high.exempt": ["alice"],
        "rules.off-hours.enabled": False,
    }
    again = scan(tr.log, state, quiet, actor="alice", classes=CLASSES)
    assert not again.rules_changed and again.scan_seq is None
    # back to the real rules: the scan starts again and raises what was hidden
    back = do_scan(tr)
    assert back.start == 0 and back.rules_changed
    assert {a.kind for a in back.alerts} == {"first-high", "off-hours"}


def test_a_link_planted_at_the_alert_file_is_not_followed(tr, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    link = tmp_path / "alerts.jsonl"
    link.symlink_to(victim)
    do_scan(tr)
    anomaly(tr)
    res = do_scan(tr, alert_file=link)
    assert res.alerts and any("alert file" in p for p in res.deliveries)
    assert victim.read_text() == "keep\n"
    assert {r.id for r in list_alerts(tr.log)} == {a.id for a in res.alerts}  # still recorded
