"""Staged retirement of KEK and root versions (the re-key screen's read model is
:mod:`custody.rekey.status`).

Stages (:class:`custody.model.KeyState`): ``active`` -> ``decrypt-only`` (as soon as a newer
version is current; :meth:`KeyHierarchy.create_kek_version` does it) -> ``disabled`` (only
when the version wraps nothing, checked inside the transaction that disables it) ->
``destroy-scheduled`` (``destroy_after = now + config.destroy_delay_days``; cancellable,
which puts a *hold* on the version) -> ``destroyed`` (after the delay; the sealed KEK bytes
are erased from the store). Each step is its own transaction, so a crash between steps
leaves a valid state that the next run continues from.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from custody import policy
from custody.clock import iso, parse
from custody.config import Config
from custody.errors import CeremonyError, PolicyError, UsageError
from custody.keys.hierarchy import KekVersion, KeyHierarchy, RootVersion
from custody.model import BRANCHES, KeyState
from custody.store.port import Store


def key_ages(hierarchy: KeyHierarchy, config: Config) -> list[policy.KeyAge]:
    """The current version and birth of each configured branch and of the root key."""
    ages = []
    active = {k.branch: k for k in hierarchy.keks() if k.state is KeyState.ACTIVE}
    for b in sorted(set(config.branches) | set(BRANCHES)):
        if b == "root":
            continue
        k = active.get(b)
        ages.append(
            policy.KeyAge(
                key=b,
                version=k.version if k else None,
                created=parse(k.created) if k else None,
            )
        )
    try:
        r = hierarchy.current_root()
        ages.append(policy.KeyAge(key="root", version=r.version, created=parse(r.created)))
    except CeremonyError:
        ages.append(policy.KeyAge(key="root", version=None, created=None))
    return ages


def holds(store: Store) -> set[tuple[str, int]]:
    """Versions whose automatic retirement was cancelled."""
    return store.holds()


def advance_retirement(
    hierarchy: KeyHierarchy, config: Config, *, now: datetime, branch: str | None = None
) -> list[str]:
    """Move every non-active version as far along the stages as the rules allow at *now*.

    Versions that still wrap something stay decrypt-only; held versions stay disabled.

    Returns:
        Human-readable steps taken, e.g. ``"data/v1: disabled"``.

    Raises:
        StorageError: the store failed (steps already committed stay committed).
    """
    held = holds(hierarchy.store)
    steps: list[str] = []
    for k in hierarchy.keks(branch):
        key = (k.branch, k.version)
        if k.state is KeyState.DECRYPT_ONLY and k.objects == 0 and not backup_users(hierarchy, k):
            try:
                hierarchy.set_kek_state(k.branch, k.version, KeyState.DISABLED, now=now)
            except PolicyError:
                continue  # something was wrapped under it meanwhile; the rule held
            steps.append(f"{k.branch}/v{k.version}: disabled")
            k = _reload(hierarchy, k)
        if k.state is KeyState.DISABLED and key not in held:
            after = now + timedelta(days=config.destroy_delay_days)
            hierarchy.set_kek_state(
                k.branch, k.version, KeyState.DESTROY_SCHEDULED, destroy_after=after, now=now
            )
            steps.append(f"{k.branch}/v{k.version}: destroy scheduled after {iso(after)}")
            k = _reload(hierarchy, k)
        if (
            k.state is KeyState.DESTROY_SCHEDULED
            and k.destroy_after is not None
            and parse(k.destroy_after) <= now
            and key not in held
        ):
            hierarchy.set_kek_state(k.branch, k.version, KeyState.DESTROYED, now=now)
            steps.append(f"{k.branch}/v{k.version}: destroyed")
    if branch is None or branch == "root":
        steps += _advance_roots(hierarchy, config, now=now, held=held)
    return steps


def _advance_roots(
    hierarchy: KeyHierarchy, config: Config, *, now: datetime, held: set[tuple[str, int]]
) -> list[str]:
    """Retired root versions: disabled -> destroy-scheduled -> destroyed (token key deleted,
    blob erased). Ceremonies disable a root once no KEK is wrapped under it; destruction
    needs the HSM, so without it a due root simply waits for the next run with the PIN."""
    steps: list[str] = []
    for r in hierarchy.roots():
        key = ("root", r.version)
        if key in held:
            continue
        if r.state is KeyState.DISABLED:
            after = now + timedelta(days=config.destroy_delay_days)
            hierarchy.set_root_state(
                r.version, KeyState.DESTROY_SCHEDULED, destroy_after=iso(after)
            )
            steps.append(f"root/v{r.version}: destroy scheduled after {iso(after)}")
        elif (
            r.state is KeyState.DESTROY_SCHEDULED
            and r.destroy_after is not None
            and parse(r.destroy_after) <= now
            and hierarchy.has_hsm
        ):
            hierarchy.set_root_state(r.version, KeyState.DESTROYED)
            steps.append(f"root/v{r.version}: destroyed")
    return steps


def backup_users(hierarchy: KeyHierarchy, k: KekVersion) -> int:
    """Catalogued backups sealed under *k* (only the ``backup`` branch has any)."""
    return 0 if k.branch != "backup" else hierarchy.store.count_backups(k.version)


def _reload(hierarchy: KeyHierarchy, k: KekVersion) -> KekVersion:
    return next(x for x in hierarchy.keks(k.branch) if x.version == k.version)


def cancel_destroy(
    hierarchy: KeyHierarchy,
    branch: str,
    version: int,
    *,
    now: datetime,
    reason: str = "cancelled by operator",
) -> KekVersion | RootVersion:
    """Cancel a scheduled destruction: back to ``disabled``, with a hold so no run re-schedules it.

    *branch* is a KEK branch, or ``"root"`` for a retired root version.

    Raises:
        UsageError: no such version. PolicyError: it is not destroy-scheduled.
    """
    if branch == "root":
        rs = [r for r in hierarchy.roots() if r.version == version]
        if not rs:
            raise UsageError(f"No root/v{version}", "See 'custody status'.")
        if rs[0].state is not KeyState.DESTROY_SCHEDULED:
            raise PolicyError(
                f"root/v{version} is {rs[0].state}, not destroy-scheduled",
                "Only a scheduled destruction can be cancelled.",
            )
        hierarchy.store.add_hold("root", version, reason=reason, now=iso(now))
        hierarchy.set_root_state(version, KeyState.DISABLED)
        return next(r for r in hierarchy.roots() if r.version == version)
    ks = [k for k in hierarchy.keks(branch) if k.version == version]
    if not ks:
        raise UsageError(f"No KEK {branch}/v{version}", "See 'custody rekey status'.")
    if ks[0].state is not KeyState.DESTROY_SCHEDULED:
        raise PolicyError(
            f"KEK {branch}/v{version} is {ks[0].state}, not destroy-scheduled",
            "Only a scheduled destruction can be cancelled.",
        )
    hierarchy.store.add_hold(branch, version, reason=reason, now=iso(now))
    return hierarchy.set_kek_state(branch, version, KeyState.DISABLED, now=now)
