"""Rotation policy as data: which keys are due, overdue or coming up, and the warnings.

The policy is the deployment config (:class:`custody.config.BranchPolicy` per KEK branch:
a key class ``high``/``medium``/``low`` rotating every 90/180/365 days, and a warning lead
time). The root key follows ``config.branches["root"]`` when present, else
:data:`DEFAULT_ROOT_POLICY` (root rotation is a quorum ceremony, so it is never automatic).

Everything here except :func:`emit_warnings` is pure: callers pass the key ages and
``now``, and get plain data back. Due dates are counted in whole UTC calendar days:

* ``overdue``: the due date has passed (``days_left < 0``);
* ``due``: the due date is today (``days_left == 0``);
* ``upcoming``: due within the branch's ``warn_days`` (a warning);
* ``ok``: otherwise; ``missing``: the branch has no active key at all.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from custody import clock
from custody.config import BranchPolicy
from custody.hardening import HOOK_ENV, child_env

DEFAULT_ROOT_POLICY = BranchPolicy(key_class="low", warn_days=30)
ACTION_STATUSES = frozenset({"due", "overdue", "missing"})
WARN_STATUSES = frozenset({"upcoming", "due", "overdue", "missing"})
HOOK_TIMEOUT_S = 15.0


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyAge:
    """One current key to evaluate: a KEK branch (or ``root``), its version and birth."""

    key: str
    version: int | None
    created: datetime | None

    def __post_init__(self) -> None:
        if (self.version is None) != (self.created is None):
            raise ValueError("version and created are both set or both None")
        if self.created is not None and self.created.tzinfo is None:
            raise ValueError("created must be timezone-aware")


@dataclass(frozen=True, slots=True, kw_only=True)
class DueItem:
    """The rotation status of one key at a given time."""

    key: str
    version: int | None
    key_class: str
    period_days: int
    warn_days: int
    created: datetime | None
    due_at: datetime | None
    days_left: int | None
    status: str

    @property
    def action_needed(self) -> bool:
        return self.status in ACTION_STATUSES

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "version": self.version,
            "class": self.key_class,
            "period_days": self.period_days,
            "warn_days": self.warn_days,
            "created": self.created.isoformat() if self.created else None,
            "due_at": self.due_at.isoformat() if self.due_at else None,
            "days_left": self.days_left,
            "status": self.status,
        }


def policy_for(key: str, branches: Mapping[str, BranchPolicy]) -> BranchPolicy:
    """The policy of *key* (a branch name or ``root``); unknown branches count as ``high``."""
    if key in branches:
        return branches[key]
    if key == "root":
        return DEFAULT_ROOT_POLICY
    return BranchPolicy(key_class="high")


def evaluate_one(age: KeyAge, policy: BranchPolicy, now: datetime) -> DueItem:
    """Evaluate one key against its policy at *now*.

    Args:
        age: the key's current version and creation time (``None`` when there is none).
        policy: its rotation class and warning lead time.
        now: the time to evaluate at (timezone-aware).

    Returns:
        The :class:`DueItem`.

    Raises:
        ValueError: *now* is naive.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if age.created is None:
        return DueItem(
            key=age.key,
            version=None,
            key_class=policy.key_class,
            period_days=policy.period_days,
            warn_days=policy.warn_days,
            created=None,
            due_at=None,
            days_left=None,
            status="missing",
        )
    due_at = age.created + timedelta(days=policy.period_days)
    days_left = (due_at.astimezone(UTC).date() - now.astimezone(UTC).date()).days
    if days_left < 0:
        status = "overdue"
    elif days_left == 0:
        status = "due"
    elif days_left <= policy.warn_days:
        status = "upcoming"
    else:
        status = "ok"
    return DueItem(
        key=age.key,
        version=age.version,
        key_class=policy.key_class,
        period_days=policy.period_days,
        warn_days=policy.warn_days,
        created=age.created,
        due_at=due_at,
        days_left=days_left,
        status=status,
    )


def evaluate(
    ages: Iterable[KeyAge], branches: Mapping[str, BranchPolicy], now: datetime
) -> tuple[DueItem, ...]:
    """Evaluate every key, most urgent first (missing, then fewest days left).

    Raises:
        ValueError: *now* is naive.
    """
    items = [evaluate_one(a, policy_for(a.key, branches), now) for a in ages]
    return tuple(
        sorted(
            items,
            key=lambda i: (
                i.days_left is not None,
                i.days_left if i.days_left is not None else 0,
                i.key,
            ),
        )
    )


def warnings(
    items: Iterable[DueItem], *, deployment_id: str = "", now: datetime | None = None
) -> tuple[dict[str, Any], ...]:
    """The warnings to raise for *items*: one JSON-ready dict per key that needs attention.

    A warning never holds key material: only names, versions, dates and counts.
    """
    out = []
    for i in items:
        if i.status not in WARN_STATUSES:
            continue
        if i.status == "missing":
            msg = f"{i.key} has no active key"
        elif i.status == "upcoming":
            msg = f"{i.key}/v{i.version} is due for rotation in {i.days_left} day(s)"
        elif i.status == "due":
            msg = f"{i.key}/v{i.version} is due for rotation today"
        else:
            msg = f"{i.key}/v{i.version} is overdue for rotation by {-(i.days_left or 0)} day(s)"
        w: dict[str, Any] = {
            "type": "rotation-warning",
            "severity": "warning" if i.status == "upcoming" else "critical",
            "message": msg,
            **i.to_json(),
        }
        if deployment_id:
            w["deployment_id"] = deployment_id
        if now is not None:
            w["at"] = now.isoformat()
        out.append(w)
    return tuple(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class HookResult:
    """What happened when a warning was handed to the alert hook."""

    ok: bool
    detail: str


def run_alert_hook(
    command: str, warning: Mapping[str, Any], *, runner: Callable[..., Any] = subprocess.run
) -> HookResult:
    """Run the configured alert hook with one warning as JSON on stdin.

    The command is split with :func:`shlex.split` and run without a shell, with an
    allow-listed environment (:func:`custody.hardening.child_env` with
    :data:`~custody.hardening.HOOK_ENV`: no PIN or passphrase variables). A failing hook is
    reported, not raised: alerting must never block a re-key job.

    Args:
        command: the ``alert_hook`` command line from the config.
        warning: one warning from :func:`warnings`.
        runner: ``subprocess.run`` (injectable for tests).

    Returns:
        A :class:`HookResult`.
    """
    try:
        argv = shlex.split(command)
        proc = runner(
            argv,
            input=json.dumps(dict(warning), sort_keys=True).encode(),
            capture_output=True,
            timeout=HOOK_TIMEOUT_S,
            check=False,
            env=child_env(keep=HOOK_ENV),
        )
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        return HookResult(ok=False, detail=f"alert hook failed to start: {type(exc).__name__}")
    if proc.returncode != 0:
        return HookResult(ok=False, detail=f"alert hook exited {proc.returncode}")
    return HookResult(ok=True, detail="delivered")


def emit_warnings(
    warns: Iterable[Mapping[str, Any]],
    *,
    alert_hook: str | None,
    audit: Callable[[Mapping[str, Any]], None] | None = None,
) -> list[HookResult]:
    """Send each warning to the audit sink (when given) and to the alert hook (when set).

    Args:
        warns: warnings from :func:`warnings`.
        alert_hook: the configured hook command, or ``None``.
        audit: a callable that durably records one warning event, or ``None``.

    Returns:
        One :class:`HookResult` per warning sent to the hook.

    Raises:
        AuditError: the audit sink refused the record (recording fails closed).
    """
    results = []
    for w in warns:
        if audit is not None:
            audit(w)
        if alert_hook:
            results.append(run_alert_hook(alert_hook, w))
    return results


def parse_time(s: str) -> datetime:
    """Parse an ISO-8601 time from the store; naive values are taken as UTC."""
    return clock.parse(s)
