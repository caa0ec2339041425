"""Benchmark: the monitor's precision and recall per rule on a planted-anomaly history.

Run: ``.venv/bin/python bench/bench_anomaly.py [--weeks 10] [--train-weeks 4] [--budget 10]
[--seed 7] [--more-seeds 3] [--audit-log] [--json]``.

A seeded generator writes a labelled, realistic access history in the audit log's own
entry shape (an ``intent`` entry, then the outcome naming it, as the CLI writes them):

  * services: machine principals reading their own secrets around the clock, each path a
    Poisson process with its own rate and a mild daily swell, rare transient failures and,
    rarely, an outage whose retries fail in a burst;
  * people: a team, a time zone, a start hour and a day length each; weekdays only, with
    public holidays, a week's leave for some, days off; a daily read count of their own;
    sometimes late work, weekend work, a typo that is denied, a list, a new path of their
    team;
  * planted anomalies of every rule's kind, in the test weeks only, each labelled with
    the entries it consists of; and two low-and-slow kinds no rule is built for (a slow
    enumeration, a slow rise in volume), reported apart as "found by another rule".

The detector (:class:`custody.monitor.Detector`, default rules) runs over the whole
history in seq order, as ``custody alerts scan`` does; alerts in the training weeks are
not scored (they are the baselines being learned). In the test weeks each day's alerts
are ranked by score and only the top ``--budget`` count (a fixed daily alert budget).
An alert is a true positive when one of its seqs belongs to a planted anomaly; a planted
anomaly of kind K is detected when an alert of a kind-K rule names one of its entries.
The false-positive rate is over principal-days: the share of normal (principal, day)
pairs active in the test weeks that drew an alert with no planted entry in it.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from custody.monitor import KINDS, Detector, MonitorConfig  # noqa: E402

T0 = 1767571200  # Monday 2026-01-05 00:00 UTC
DAY, HOUR, MIN = 86400, 3600, 60
SECRET_KINDS = {
    "db": "high",
    "tls-key": "high",
    "signing-key": "high",
    "api-key": "medium",
    "token": "medium",
    "webhook": "medium",
    "config": "low",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Params:
    seed: int = 7
    weeks: int = 10
    train_weeks: int = 4
    services: int = 100
    people: int = 150
    per_kind: int = 20  # planted anomalies of each kind
    out_of_family: int = 10  # planted anomalies of each kind no rule is built for
    service_rate: float = 0.8  # median reads per path per hour (log-normal, sigma 0.8)
    person_reads: float = 8.0  # median reads per working day (log-normal, sigma 0.6)
    late_work: float = 0.04  # chance a working day has an evening session
    weekend_work: float = 0.02  # chance a weekend day has a few reads
    typo: float = 0.01  # chance a person's read is denied
    outage: float = 0.003  # chance a service-day has a burst of failed retries
    new_path: float = 0.03  # chance a working day includes a first read of a team path


# Anomalies no rule is built for (reported apart): what the rules' families miss.
OUT_KINDS = ("slow-enumeration", "slow-volume")


@dataclass(slots=True)
class Planted:
    id: int
    kind: str
    actor: str
    day: int
    span: int = 1  # days
    seqs: set[int] = field(default_factory=set)


# an event: (time, actor, op, target, outcome, details, planted id or -1, notice)
Ev = tuple[int, str, str, str, str, dict[str, Any], int, bool]


@dataclass(slots=True)
class History:
    """The events in time order; :meth:`entries` streams them as audit entries."""

    params: Params
    events: list[Ev]
    planted: list[Planted]
    classes: dict[str, str]
    principals: int
    size: int = 0

    def entries(self) -> Iterator[dict[str, Any]]:
        """The audit entries, seq 0 upwards, as the CLI writes them (intent, outcome)."""
        planted = self.planted
        deleted: dict[str, int] = {}
        s = 0
        for t, actor, op, target, outcome, details, pid, notice in self.events:
            env, _, path = target.partition(":")
            first = s
            if op == "secret delete":
                deleted[target] = pid
            elif op == "secret restore":
                deleted.pop(target, None)
            elif op == "secret get" and target in deleted and pid < 0:
                pid = deleted[target]  # any read in the window belongs to the anomaly
            det = {"env": env, "path": path, **details}
            yield {"seq": s, "time": t, "actor": actor, "op": op, "target": target,
                   "outcome": "intent", "details": det}  # fmt: skip
            s += 1
            if notice:
                yield {"seq": s, "time": t, "actor": actor, "op": "secret alert",
                       "target": target, "outcome": "ok",
                       "details": {"kind": "read-during-recovery-window", "env": env}}  # fmt: skip
                s += 1
            out: dict[str, Any] = {"intent_seq": first}
            if outcome != "ok":
                out["title"] = details.get("reason", "access denied")
            yield {"seq": s, "time": t, "actor": actor, "op": op, "target": target,
                   "outcome": outcome, "details": out}  # fmt: skip
            s += 1
            if pid >= 0:
                planted[pid].seqs.update(range(first, s))
        self.size = s


class _Gen:
    def __init__(self, p: Params) -> None:
        self.p = p
        self.r = random.Random(p.seed)
        self.days = p.weeks * 7
        self.train_days = p.train_weeks * 7
        self.events: list[Ev] = []
        self.planted: list[Planted] = []
        self.classes: dict[str, str] = {}
        r = self.r
        self.svc_paths: dict[str, list[str]] = {}
        for i in range(p.services):
            kinds = r.sample(sorted(SECRET_KINDS), r.randint(1, 4))
            paths = []
            for k in kinds:
                for env in ("prod", "staging"):
                    t = f"{env}:svc{i:02d}/{k}"
                    self.classes[t] = SECRET_KINDS[k] if env == "prod" else "low"
                    paths.append(t)
            self.svc_paths[f"svc{i:02d}"] = paths
        self.all_paths = sorted(self.classes)
        self.high = [t for t in self.all_paths if self.classes[t] == "high"]
        self.holidays = {
            d for d in range(self.days) if d % 7 < 5 and r.random() < 1 / 20
        }  # about one weekday in 20
        self.people: dict[str, dict[str, Any]] = {}
        svcs = sorted(self.svc_paths)
        for j in range(p.people):
            team = r.sample(svcs, r.choice((1, 1, 2)))
            pool = [t for s in team for t in self.svc_paths[s]]
            known = r.sample(pool, min(len(pool), r.randint(2, 6)))
            tz = r.choices((0, -5, 5), (0.7, 0.2, 0.1))[0]
            start = r.choice((7, 8, 8, 9, 9, 10))
            leave = r.randrange(self.days - 7) if r.random() < 0.5 else -100
            self.people[f"p{j:03d}"] = {
                "team": team,
                "pool": pool,
                "known": known,
                "tz": tz,
                "start": start,
                "length": r.choice((7, 8, 8, 9)),
                "reads": min(40.0, max(2.0, r.lognormvariate(math.log(p.person_reads), 0.6))),
                "leave": leave,
            }

    # -- helpers ----------------------------------------------------------------------
    def add(self, t: int, actor: str, op: str, target: str, outcome: str = "ok", **kw: Any) -> None:
        pid = kw.pop("_pid", -1)
        notice = kw.pop("_notice", False)
        self.events.append((t, actor, op, target, outcome, kw, pid, notice))

    def works(self, name: str, d: int) -> bool:
        pe = self.people[name]
        return (
            d % 7 < 5
            and d not in self.holidays
            and not pe["leave"] <= d < pe["leave"] + 7
            and self.r.random() > 0.05
        )

    def work_time(self, name: str, d: int) -> int:
        pe = self.people[name]
        local = pe["start"] + self.r.random() * pe["length"]
        return int(T0 + d * DAY + (local - pe["tz"]) * HOUR)

    # -- normal traffic -----------------------------------------------------------------
    def services(self) -> None:
        r, p = self.r, self.p
        end = T0 + self.days * DAY
        for svc, paths in self.svc_paths.items():
            for t_path in paths:
                if not t_path.startswith("prod:"):
                    continue
                lam = min(8.0, max(0.1, r.lognormvariate(math.log(p.service_rate), 0.8))) / HOUR
                phase = r.random() * DAY
                t = T0 + r.random() / lam
                while t < end:
                    t += r.expovariate(lam * 1.3)
                    swell = 1 + 0.3 * math.sin(2 * math.pi * ((t + phase) % DAY) / DAY)
                    if r.random() > swell / 1.3:
                        continue
                    ok = r.random() > 0.002
                    self.add(int(t), svc, "secret get", t_path, "ok" if ok else "failed")
            for d in range(self.days):
                if r.random() < p.outage:  # an outage: retries fail together
                    t0 = T0 + d * DAY + r.randrange(DAY)
                    for k in range(r.randint(5, 10)):
                        self.add(t0 + k * r.randint(5, 40), svc, "secret get", paths[0], "failed")

    def people_traffic(self) -> None:
        r, p = self.r, self.p
        for name, pe in self.people.items():
            for d in range(self.days):
                if d % 7 >= 5:
                    if r.random() < p.weekend_work:
                        base = int(T0 + d * DAY + (r.uniform(10, 16) - pe["tz"]) * HOUR)
                        for k in range(r.randint(1, 3)):
                            self.add(base + k * 300, name, "secret get", r.choice(pe["known"]))
                    continue
                if not self.works(name, d):
                    continue
                n = max(1, int(r.gauss(pe["reads"], pe["reads"] ** 0.5)))
                for _ in range(n):
                    t = self.work_time(name, d)
                    if r.random() < p.typo:
                        self.add(t, name, "secret get", r.choice(self.all_paths), "denied")
                    else:
                        self.add(t, name, "secret get", r.choice(pe["known"]))
                if r.random() < p.late_work:
                    base = int(
                        T0
                        + d * DAY
                        + (pe["start"] + pe["length"] + r.uniform(1, 3) - pe["tz"]) * HOUR
                    )
                    for k in range(r.randint(1, 3)):
                        self.add(base + k * 240, name, "secret get", r.choice(pe["known"]))
                if r.random() < 0.05:
                    self.add(self.work_time(name, d), name, "secret list", "prod:")
                if r.random() < p.new_path:
                    fresh = [x for x in pe["pool"] if x not in pe["known"]]
                    if fresh:
                        t_new = r.choice(fresh)
                        pe["known"].append(t_new)
                        self.add(self.work_time(name, d), name, "secret get", t_new)

    # -- planted anomalies -------------------------------------------------------------
    def plant(self, kind: str) -> None:
        r = self.r
        pid = len(self.planted)
        person = r.random() < 0.7 or kind in ("off-hours", "first-high", "soft-delete-read")
        actor = r.choice(sorted(self.people)) if person else r.choice(sorted(self.svc_paths))
        d = r.randrange(self.train_days, self.days)
        if person:
            while d % 7 >= 5 and kind != "off-hours":
                d = r.randrange(self.train_days, self.days)
            known = self.people[actor]["known"]
            t = self.work_time(actor, d)
        else:
            known = [x for x in self.svc_paths[actor] if x.startswith("prod:")]
            t = T0 + d * DAY + r.randrange(DAY)
        self.planted.append(Planted(id=pid, kind=kind, actor=actor, day=d))

        def add(t: int, op: str, target: str, outcome: str = "ok", **kw: Any) -> None:
            self.add(t, actor, op, target, outcome, _pid=pid, **kw)

        if kind == "failed-burst":
            for k in range(r.randint(6, 15)):
                add(t + k * r.randint(5, 30), "secret get", r.choice(self.all_paths), "denied")
        elif kind == "volume":
            if person:
                extra = int(self.people[actor]["reads"] * r.uniform(2, 8))
                span = self.people[actor]["length"] * HOUR
            else:
                extra = int(24 * r.uniform(2, 8) * len(known) * self.p.service_rate)
                span = 4 * HOUR
            for _ in range(max(extra, 10)):
                add(t - (t - T0) % DAY % HOUR + r.randrange(span), "secret get", r.choice(known))
        elif kind == "off-hours":
            if r.random() < 0.5:  # a night on a weekday
                d = r.randrange(self.train_days, self.days)
                while d % 7 >= 5:
                    d += 1
                local = r.uniform(0, 5)
            else:  # a weekend day
                d = r.randrange(self.train_days, self.days)
                d += (5 - d % 7) % 7
                local = r.uniform(8, 18)
            self.planted[-1].day = min(d, self.days - 1)
            base = int(T0 + self.planted[-1].day * DAY + (local - self.people[actor]["tz"]) * HOUR)
            for k in range(r.randint(1, 3)):
                add(base + k * 120, "secret get", r.choice(known))
        elif kind == "enumeration":
            if r.random() < 0.3:
                for k in range(r.randint(4, 8)):
                    add(t + k * r.randint(30, 300), "secret list", "prod:")
            else:
                fresh = [x for x in self.all_paths if x not in known]
                for k, target in enumerate(r.sample(fresh, min(len(fresh), r.randint(9, 25)))):
                    add(t + k * r.randint(10, 120), "secret get", target)
        elif kind == "first-high":
            pool = self.people[actor]["pool"]
            fresh = [x for x in self.high if x not in known and x not in pool]
            add(t, "secret get", r.choice(fresh or [x for x in self.high if x not in known]))
        elif kind == "old-version":
            add(t, "secret get", r.choice(known), label="previous")
        elif kind == "revoked-credential":
            why = r.choice(("token revoked", "grant expired"))
            for k in range(r.randint(1, 3)):
                add(t + k * 60, "secret get", r.choice(known), "denied", reason=why)
        elif kind == "soft-delete-read":
            target = r.choice(known)
            self.add(t - r.randint(600, 6 * HOUR), "admin", "secret delete", target, _pid=pid)
            add(t, "secret get", target, "denied", _notice=True)
            self.add(t + 600, "admin", "secret restore", target, _pid=pid)

    def plant_slow(self, kind: str) -> None:
        """A low-and-slow anomaly: a few never-read paths a day, or half as many reads
        again as usual, over days, each step below every rule's threshold."""
        r = self.r
        pid = len(self.planted)
        actor = r.choice(sorted(self.people))
        pe = self.people[actor]
        span = 5 if kind == "slow-enumeration" else 10
        d0 = r.randrange(self.train_days, self.days - span)
        self.planted.append(Planted(id=pid, kind=kind, actor=actor, day=d0, span=span))
        fresh = [x for x in self.all_paths if x not in pe["known"]]
        for d in range(d0, d0 + span):
            if d % 7 >= 5:
                continue
            if kind == "slow-enumeration":
                base = int(T0 + d * DAY + (pe["start"] - pe["tz"]) * HOUR)
                for k in range(min(len(fresh), r.randint(2, 3))):
                    target = fresh.pop(r.randrange(len(fresh)))
                    self.add(base + k * 2 * HOUR + r.randrange(HOUR), actor, "secret get",
                             target, _pid=pid)  # fmt: skip
            else:
                for _ in range(max(1, int(pe["reads"] * 0.6))):
                    self.add(self.work_time(actor, d), actor, "secret get",
                             r.choice(pe["known"]), _pid=pid)  # fmt: skip

    def history(self) -> History:
        self.services()
        self.people_traffic()
        for kind in KINDS:
            for _ in range(self.p.per_kind):
                self.plant(kind)
        for kind in OUT_KINDS:
            for _ in range(self.p.out_of_family):
                self.plant_slow(kind)
        self.events.sort(key=lambda e: (e[0], e[6]))
        h = History(
            params=self.p,
            events=self.events,
            planted=self.planted,
            classes=self.classes,
            principals=len(self.people) + len(self.svc_paths),
        )
        for _ in h.entries():  # the first pass labels the planted entries' seqs
            pass
        return h


def generate(p: Params) -> History:
    """A labelled access history (deterministic for a given *p*)."""
    return _Gen(p).history()


def detect(h: History, config: MonitorConfig | None = None) -> Iterator[Any]:
    det = Detector(config or MonitorConfig(), classes=h.classes)
    for e in h.entries():
        yield from det.feed(e)


def evaluate(h: History, alerts: list[Any], budget: int | None) -> dict[str, Any]:
    """Precision and recall per rule kind in the test weeks, at *budget* alerts a day."""
    start = T0 + h.params.train_weeks * 7 * DAY
    by_seq = {s: pl.id for pl in h.planted for s in pl.seqs}
    test = [a for a in alerts if a.time >= start]
    per_day: dict[int, list[Any]] = defaultdict(list)
    for a in test:
        per_day[(a.time - T0) // DAY].append(a)
    kept = []
    for day_alerts in per_day.values():
        day_alerts.sort(key=lambda a: (-a.score, a.time))
        kept += day_alerts if budget is None else day_alerts[:budget]
    rows: dict[str, dict[str, Any]] = {}
    detected_any: set[int] = set()
    fp_days: set[tuple[str, int]] = set()
    for k in KINDS:
        mine = [a for a in kept if a.kind == k]
        tp = [a for a in mine if any(s in by_seq for s in a.seqs)]
        hit = {by_seq[s] for a in mine for s in a.seqs if s in by_seq}
        planted = [pl for pl in h.planted if pl.kind == k]
        found = [pl for pl in planted if pl.id in hit]
        rows[k] = {
            "planted": len(planted),
            "alerts": len(mine),
            "true_alerts": len(tp),
            "precision": len(tp) / len(mine) if mine else None,
            "recall": len(found) / len(planted) if planted else None,
        }
    for a in kept:
        ids = {by_seq[s] for s in a.seqs if s in by_seq}
        detected_any |= ids
        if not ids:
            fp_days.add((a.actor, (a.time - T0) // DAY))
    family = [pl for pl in h.planted if pl.kind in KINDS]
    outside = {
        k: {
            "planted": sum(pl.kind == k for pl in h.planted),
            "detected_by_any_rule": sum(pl.kind == k and pl.id in detected_any for pl in h.planted),
        }
        for k in OUT_KINDS
    }
    active: set[tuple[str, int]] = set()
    anomalous = {(pl.actor, pl.day + k) for pl in h.planted for k in range(pl.span)}
    for ev in h.events:
        if ev[0] >= start and ev[1] != "admin":
            active.add((ev[1], (ev[0] - T0) // DAY))
    normal = active - anomalous
    tp_all = sum(1 for a in kept if any(s in by_seq for s in a.seqs))
    return {
        "budget": budget,
        "rules": rows,
        "alerts": len(kept),
        "alerts_per_day": len(kept) / (h.params.weeks - h.params.train_weeks) / 7,
        "precision": tp_all / len(kept) if kept else None,
        "detection": (
            sum(pl.id in detected_any for pl in family) / len(family) if family else None
        ),
        "out_of_family": outside,
        "fpr_principal_days": len(fp_days & normal) / len(normal) if normal else None,
        "normal_principal_days": len(normal),
    }


def _pct(x: float | None) -> str:
    return "   -" if x is None else f"{100 * x:5.1f}%"


def _via_log(h: History) -> dict[str, Any]:
    """Write the history into a real audit log and time a full ``scan`` of it (the library
    call ``custody alerts scan --full`` makes); its alerts must be the in-memory ones."""
    import tempfile

    from custody.audit.log import AuditLog
    from custody.monitor import scan

    with tempfile.TemporaryDirectory(prefix="custody-bench-") as tmp:
        log = AuditLog(Path(tmp) / "audit.db", durable=False)
        try:
            t0 = time.perf_counter()
            for e in h.entries():
                log.append(
                    e["op"], e["target"], e["actor"], outcome=e["outcome"],
                    details=e["details"], now=e["time"],
                )  # fmt: skip
            t1 = time.perf_counter()
            res = scan(
                log, Path(tmp) / "state.json", MonitorConfig(), actor="bench", classes=h.classes
            )
            t2 = time.perf_counter()
        finally:
            log.close()
    same = sorted(a.id for a in res.alerts) == sorted(a.id for a in detect(h))
    return {
        "write_s": round(t1 - t0, 1),
        "scan_s": round(t2 - t1, 1),
        "scan_entries_per_s": round(h.size / (t2 - t1)),
        "same_alerts": same,
    }


def _run(p: Params, budget: int) -> tuple[History, dict[str, Any]]:
    t0 = time.perf_counter()
    h = generate(p)
    t1 = time.perf_counter()
    alerts = list(detect(h))
    t2 = time.perf_counter()
    return h, {
        "params": asdict(p),
        "entries": h.size,
        "principals": h.principals,
        "secrets": len(h.classes),
        "generate_s": round(t1 - t0, 2),
        "detect_s": round(t2 - t1, 2),
        "entries_per_s": round(h.size / (t2 - t1)),
        "at_budget": evaluate(h, alerts, budget),
        "unbounded": evaluate(h, alerts, None),
    }


def _table(title: str, ev: dict[str, Any], planted: int) -> None:
    print(f"\n{title}:")
    print(f"{'rule':20} {'planted':>7} {'alerts':>7} {'true':>6} {'precision':>9} {'recall':>7}")
    for k, row in ev["rules"].items():
        print(
            f"{k:20} {row['planted']:>7} {row['alerts']:>7} {row['true_alerts']:>6} "
            f"{_pct(row['precision']):>9} {_pct(row['recall']):>7}"
        )
    for k, o in ev["out_of_family"].items():
        found = o["detected_by_any_rule"]
        print(f"{k:20} {o['planted']:>7}  (no rule of its own: {found} found by another rule)")
    print(
        f"{'all rules':20} {planted:>7} {ev['alerts']:>7} {'':>6} "
        f"{_pct(ev['precision']):>9} {_pct(ev['detection']):>7}   "
        f"FPR {_pct(ev['fpr_principal_days'])} of {ev['normal_principal_days']:,} normal "
        f"principal-days; {ev['alerts_per_day']:.1f} alerts/day"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    d = Params()
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument(
        "--more-seeds", type=int, default=0, metavar="N", help="also N further seeds (summary)"
    )
    ap.add_argument("--weeks", type=int, default=d.weeks)
    ap.add_argument("--train-weeks", type=int, default=d.train_weeks)
    ap.add_argument("--services", type=int, default=d.services)
    ap.add_argument("--people", type=int, default=d.people)
    ap.add_argument("--per-kind", type=int, default=d.per_kind)
    ap.add_argument("--out-of-family", type=int, default=d.out_of_family)
    ap.add_argument("--budget", type=int, default=10, help="alerts a day that count")
    ap.add_argument(
        "--audit-log", action="store_true", help="also write a real audit log and time a scan"
    )
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    p = Params(
        seed=a.seed,
        weeks=a.weeks,
        train_weeks=a.train_weeks,
        services=a.services,
        people=a.people,
        per_kind=a.per_kind,
        out_of_family=a.out_of_family,
    )
    h, out = _run(p, a.budget)
    if a.audit_log:
        out["audit_log"] = _via_log(h)
    seeds = []
    for k in range(1, a.more_seeds + 1):
        _, o = _run(replace(p, seed=p.seed + k), a.budget)
        seeds.append({"seed": p.seed + k, "at_budget": o["at_budget"], "unbounded": o["unbounded"]})
    out["more_seeds"] = seeds
    if a.json:
        print(json.dumps(out, indent=2))
        return 0
    print("generator: " + ", ".join(f"{k}={v}" for k, v in asdict(p).items()))
    print(
        f"history: {h.size:,} audit entries, {h.principals} principals, "
        f"{len(h.classes)} secrets; generated in {out['generate_s']} s, scanned in "
        f"{out['detect_s']} s ({out['entries_per_s']:,} entries/s)"
    )
    weeks = f"test weeks {p.train_weeks + 1}-{p.weeks}"
    fam = sum(pl.kind in KINDS for pl in h.planted)
    _table(f"{weeks}, budget {a.budget} alerts/day", out["at_budget"], fam)
    _table(f"{weeks}, no budget", out["unbounded"], fam)
    if seeds:
        print(f"\nother seeds, all rules (budget {a.budget}; no budget):")
        for s in seeds:
            b, u = s["at_budget"], s["unbounded"]
            print(
                f"  seed {s['seed']}: detection {_pct(b['detection'])} at FPR "
                f"{_pct(b['fpr_principal_days'])}, precision {_pct(b['precision'])}; "
                f"{_pct(u['detection'])} at {_pct(u['fpr_principal_days'])}"
            )
    if a.audit_log:
        v = out["audit_log"]
        print(
            f"\nreal audit log: written in {v['write_s']} s; full scan {v['scan_s']} s "
            f"({v['scan_entries_per_s']:,} entries/s); same alerts: {v['same_alerts']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
