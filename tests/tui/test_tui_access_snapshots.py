"""Snapshot tests of the access, alerts and compliance screens at 80x24 and 120x40, on
fixed data (:mod:`tui.fakes.access`; fixed clock, so the countdowns are fixed too).

Requests pending (one half approved, one about to expire) and decided; grants live, lapsed
and revoked; the request form; alerts open and acknowledged with the entries behind one;
the compliance report with findings, a clean section and one not available. No snapshot
holds a secret: the canary value, a passphrase typed into the approval prompt, the PIN.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, TEST_PIN, passphrase_of

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tui.app import make_app
from tui.fakes import StaticServices
from tui.fakes.access import (
    StaticAccessServices,
    StaticMonitorServices,
    StaticServiceAccountServices,
)
from tui.services.access import AccessView, GrantItem, RequestItem
from tui.services.audit import AuditEntryRow
from tui.services.home import Settings
from tui.services.monitor import AlertItem, compliance_view
from tui.services.service_accounts import ServiceItem, ServiceSecret

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
T = int(NOW.timestamp())
SIZES = [(80, 24), (120, 40)]
SNAPDIR = Path(__file__).parent / "__snapshots__" / "test_tui_access_snapshots"
CANARY = "Canary-Value-7f3a!Qx9#Lm2@Zr8$Wt"


def sample_access() -> AccessView:
    def req(rid: str, who: str, path: str, left: int, approvers: tuple[str, ...],
            state: str = "pending", needed: int = 2) -> RequestItem:  # fmt: skip
        return RequestItem(
            id=rid, requester=who, env="prod", path=path, actions=("metadata", "read"),
            security_class="high" if needed == 2 else "medium", needed=needed,
            approvers=approvers, not_before=T - 600, not_after=T + left, state=state,
            reason="incident 7: check the replica password", digest="9f" * 32,
        )  # fmt: skip

    def grant(gid: str, who: str, path: str, until: int, state: str, **kw: str) -> GrantItem:
        return GrantItem(
            id=gid, request_id="req-00aa11bb22cc33dd", principal=who, env="prod", path=path,
            actions=("metadata", "read"), not_before=T - 7200, not_after=T + until,
            state=state, approvers=("alice", "bob"), **kw,
        )  # fmt: skip

    return AccessView(
        requests=(
            req("req-3c9e1f7a2b6d4e80", "billing-svc", "payments/db/password", 3250, ("alice",)),
            req("req-71d0a4c2e9b35f16", "ops-bot", "payments/stripe/api-key", 75, (), needed=1),
            req(
                "req-00aa11bb22cc33dd",
                "reports",
                "payments/db/replica",
                0,
                ("alice", "bob"),
                state="granted",
            ),
        ),
        grants=(
            grant("grant-5be2178c0d66ae91", "reports", "payments/db/replica", 1800, "live"),
            grant("grant-0d66ae915be2178c", "ops-bot", "payments/", -3600, "lapsed"),
            grant(
                "grant-e2f8193f9a1c91c4",
                "billing-svc",
                "payments/db/password",
                600,
                "revoked",
                revoked_by="carol",
                revoke_reason="incident closed",
            ),
        ),
        verified=True,
    )


def sample_alerts() -> tuple[tuple[AlertItem, ...], tuple[AuditEntryRow, ...]]:
    alerts = (
        AlertItem(
            id="a1f0c3d9e8b7a6f5",
            seq=412,
            time=T - 300,
            rule="revoked-credential",
            kind="revoked-credential",
            principal="billing-svc",
            target="prod:payments/db/password",
            summary="billing-svc used a revoked grant (the grant was revoked)",
            score=5.0,
            seqs=(405, 406),
        ),
        AlertItem(
            id="b2e1d4c0f9a8b7e6",
            seq=398,
            time=T - 5400,
            rule="failed-burst",
            kind="failed-burst",
            principal="ops-bot",
            target="prod:payments/",
            summary="5 refused accesses by ops-bot in 300 s",
            score=3.0,
            seqs=(380, 382, 384, 386, 388),
            acked_by="carol",
            ack_note="a misconfigured deploy, fixed",
        ),
    )
    entries = tuple(
        AuditEntryRow(
            seq=s,
            time=T - 310 + i,
            actor="billing-svc",
            op="access decide",
            target="prod:payments/db/password",
            outcome="intent" if i == 0 else "denied",
            details=(("reason", "the grant grant-e2f8193f was revoked"),),
        )
        for i, s in enumerate((405, 406))
    )
    return alerts, entries


def sample_report():
    sec: list[dict[str, Any]] = [
        {"id": "rotations", "title": "Overdue and soon-due rotations (keys and secrets)",
         "status": "findings", "items": [
             {"kind": "key", "name": "data", "version": 2, "class": "medium",
              "status": "overdue", "days_left": -3},
             {"kind": "secret", "name": "prod:payments/db/password", "status": "soon",
              "days_left": 12}]},
        {"id": "ownership", "title": "Secrets without an owner or an expiry", "status": "ok",
         "items": []},
        {"id": "grants", "title": "Grants that have outlived their need", "status": "findings",
         "live": 2,
         "items": [{"grant": "grant-5be2178c", "principal": "reports", "why": "never used"}]},
        {"id": "mfa", "title": "Principals without MFA", "status": "findings", "principals": 4,
         "items": [{"name": "carol", "role": "super-admin", "kind": "person",
                    "required": True, "state": "not enrolled"}]},
        {"id": "drills", "title": "Custodians without a drill on the active epoch",
         "status": "not-available", "items": [],
         "reason": "no active share set (a development root has no custodians)"},
        {"id": "alerts", "title": "Open alerts", "status": "findings", "unscanned_entries": 3,
         "items": [{"id": "a1f0c3d9e8b7", "rule": "revoked-credential",
                    "principal": "billing-svc"}]},
        {"id": "checkpoint", "title": "The audit log's last pinned checkpoint", "status": "ok",
         "items": [], "entries": 420, "log_verifies": True, "pinned": False,
         "max_age_seconds": 86400, "last": {"tree_size": 410, "time": T - 3600,
                                            "root": "ab" * 32, "signers": ["audit"],
                                            "age_seconds": 3600, "entries_after": 10}},
    ]  # fmt: skip
    return compliance_view(
        {
            "deployment_id": "dep-7f3a9c",
            "at": NOW.isoformat(timespec="seconds"),
            "collected_at": NOW.isoformat(timespec="seconds"),
            "source": "home /srv/custody",
            "findings": sum(len(s["items"]) for s in sec),
            "sections": sec,
        }
    )


def sample_services() -> tuple[ServiceItem, ...]:
    def sec(target: str, cls: str, cur: int, read: tuple[int, ...], days: int) -> ServiceSecret:
        return ServiceSecret(target=target, security_class=cls, state="active", current=cur,
                             read_versions=read, last_read=T - 900 if read else 0,
                             days_left=days)  # fmt: skip

    def svc(name: str, prefixes: tuple[str, ...], cred: str, reads: int, refused: int,
            secrets: tuple[ServiceSecret, ...]) -> ServiceItem:  # fmt: skip
        return ServiceItem(name=name, role="service-user", prefixes=prefixes, envs=("prod",),
                           credential=cred, last_time=T - 900 if reads else 0,
                           last_op="secret.read" if reads else "",
                           last_target=secrets[0].target if reads else "",
                           last_outcome="ok" if reads else "", reads=reads, refused=refused,
                           secrets=secrets)  # fmt: skip

    return (
        svc("billing-svc", ("payments",), "token 2af7513f", 1240, 3, (
            sec("prod:payments/db/password", "high", 4, (3, 4), 12),
            sec("prod:payments/stripe/api-key", "medium", 2, (2,), -2),
            sec("prod:payments/webhook", "low", 1, (), 75),
        )),
        svc("reports", ("reports", "payments/db"), "token 91c4d05b", 88, 0, (
            sec("prod:payments/db/replica", "high", 2, (2,), 40),
        )),
        svc("old-batch", ("batch",), "token revoked", 0, 12, ()),
    )  # fmt: skip


def app_for():
    from tests.tui.test_tui_snapshots import sample_view

    settings = Settings(home=Path("/srv/custody"), clock=lambda: NOW, deterministic=True)
    app = make_app(settings, StaticServices(settings=settings, view=sample_view()))
    alerts, entries = sample_alerts()
    app.access_services = StaticAccessServices(sample_access())  # type: ignore[attr-defined]
    app.monitor_services = StaticMonitorServices(  # type: ignore[attr-defined]
        alert_items=alerts, entries=entries, report=sample_report()
    )
    app.service_account_services = StaticServiceAccountServices(  # type: ignore[attr-defined]
        sample_services()
    )
    return app


async def settled(pilot) -> None:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def opener(key: str, *then: str):
    async def before(pilot) -> None:
        await settled(pilot)
        await pilot.press(key)
        await settled(pilot)
        for k in then:
            await pilot.press(k)
            await settled(pilot)

    return before


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_access(snap_compare, size):
    assert snap_compare(app_for(), terminal_size=size, run_before=opener("G"))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_access_request_form(snap_compare, size):
    assert snap_compare(app_for(), terminal_size=size, run_before=opener("G", "n"))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_access_passphrase_typed(snap_compare, size):
    async def before(pilot) -> None:
        await opener("G", "s")(pilot)
        await pilot.press(*"/keys/alice.key.pem", "enter")
        await settled(pilot)
        await pilot.press(*passphrase_of("alice"))
        await settled(pilot)

    assert snap_compare(app_for(), terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_access_revoke_confirm(snap_compare, size):
    async def before(pilot) -> None:
        await opener("G", "tab", "x", "enter")(pilot)

    assert snap_compare(app_for(), terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_alerts(snap_compare, size):
    assert snap_compare(app_for(), terminal_size=size, run_before=opener("exclamation_mark"))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_alert_detail(snap_compare, size):
    run = opener("exclamation_mark", "enter")
    assert snap_compare(app_for(), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_compliance(snap_compare, size):
    assert snap_compare(app_for(), terminal_size=size, run_before=opener("C"))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_compliance_section_detail(snap_compare, size):
    run = opener("C", "down", "down", "down", "enter")
    assert snap_compare(app_for(), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_services(snap_compare, size):
    assert snap_compare(app_for(), terminal_size=size, run_before=opener("S"))


def test_no_secret_in_the_access_snapshots():
    svgs = sorted(SNAPDIR.glob("*.svg"))
    assert len(svgs) >= 18, "run with --snapshot-update first"
    for svg in svgs:
        text = svg.read_text(encoding="utf-8")
        for secret in (CANARY, passphrase_of("alice"), TEST_PIN):
            assert secret not in text, svg.name
            # an SVG may split text at spaces or escape it: look for a distinctive piece too
            assert secret.replace("-", "")[:10] not in text.replace("-", ""), svg.name
