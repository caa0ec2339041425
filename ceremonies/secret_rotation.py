"""A verified rotation of one secret that leaves a signed record (docs/secrets.md).

The policy's seven steps, each recorded before it acts in a transcript bundle (the same
format, recorder and verifier as the ceremonies, so ``custody transcript verify`` checks it
offline with pinned keys):

1. ``stage``: a new value (made to the category's standard from the HSM's RNG, or supplied
   by a person) goes into ``pending``;
2. stored (the same step: the record names its source and its keyed digest, never it);
3. ``update``: the service is updated by ``--update-cmd``, which gets the value in its
   environment (``CUSTODY_SECRET_VALUE``) and in a 0600 file (``CUSTODY_SECRET_FILE``), never
   in argv;
4. ``verify``: ``--verify-cmd`` gets the value the same way; its exit status and the SHA-256
   of its output are recorded;
5. ``promote``: ``pending`` becomes ``current``, the old value stays ``previous`` for the
   overlap window, so services rotate without downtime;
6. ``revoke``: at the end of the window (``custody secret rotate --due``, in a bundle of its
   own whose policy links to the rotation's final checkpoint), or at once in an emergency;
7. the bundle closes with a checkpoint signed by the operator.

A failed update or verify discards ``pending`` (``current`` is unchanged), records the
failure and closes the bundle as aborted; after ``max_rotation_failures`` in a row the
secret's automatic rotation pauses and an alert is raised. An emergency rotation skips the
overlap, revokes the old value at once and records an impact list: who read it, from the
audit log.
"""

from __future__ import annotations

import hashlib
import shlex
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ceremonies.roster import Roster
from ceremonies.runner.opening import roster_entries
from ceremonies.transcript.model import Policy, SignedPolicy, Threshold
from ceremonies.transcript.recorder import Recorder
from custody.audit.signers import AUDIT_KEY_LABEL, HsmSigner
from custody.deployment import Deployment
from custody.errors import CustodyError, PolicyError, UsageError
from custody.hardening import HOOK_ENV, child_env
from custody.privatefile import write_private
from custody.secrets import standards
from custody.secrets.categories import Category
from custody.secrets.consumers import Consumers
from custody.secrets.vault import Vault

SCRIPT = ("stage", "update", "verify", "promote")
EMERGENCY_SCRIPT = ("stage", "update", "verify", "promote", "revoke", "impact")
REVOKE_SCRIPT = ("revoke",)
CMD_TIMEOUT_S = 300


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    env: str
    path: str
    ok: bool
    bundle: str
    new_version: int | None
    old_version: int | None
    failures: int
    paused: bool
    detail: str


def _run(cmd: str, value: str, what: str) -> tuple[int, str]:
    """Run a hook with the value in its environment and a 0600 file; return (exit, sha256
    of stdout+stderr). The output itself is never kept (it may echo the value)."""
    try:
        argv = shlex.split(cmd)
    except ValueError as exc:
        raise UsageError(f"The {what} command cannot be parsed", str(exc)) from exc
    if not argv:
        raise UsageError(f"The {what} command is empty", "")
    with tempfile.TemporaryDirectory(prefix="custody-secret-") as d:
        f = Path(d) / "value"
        write_private(f, value.encode("utf-8"))
        env = child_env(
            keep=(*HOOK_ENV, "PATH"),
            extra={"CUSTODY_SECRET_VALUE": value, "CUSTODY_SECRET_FILE": str(f)},
        )
        try:
            p = subprocess.run(
                argv, env=env, capture_output=True, timeout=CMD_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return 127, hashlib.sha256(type(exc).__name__.encode()).hexdigest()
    return p.returncode, hashlib.sha256(p.stdout + p.stderr).hexdigest()


def _policy(
    dep: Deployment,
    signer: Any,
    kind: str,
    script: tuple[str, ...],
    purpose: str,
    prev: Mapping[str, Any] | None = None,
) -> SignedPolicy:
    import time

    now = int(time.time())
    roster = Roster(dep.store)
    roster.require(signer.public, now=now, role="super-admin")
    pol = Policy.new(
        purpose=purpose,
        kind=kind,
        created_at=now,
        deployment=dep.config.deployment_id,
        roster=roster_entries(roster, now),
        permissions={"super-admin": ("*",)},
        script=script,
        close_quorum={"super-admin": 1},
        exception_quorum=Threshold(role="super-admin", count=1),
        prev_checkpoint=dict(prev) if prev else None,
    )
    return SignedPolicy(policy=pol).signed_by(signer)


def _recorder(dep: Deployment, signed: SignedPolicy, signer: Any) -> tuple[Recorder, Path]:
    root = dep.home.transcripts_dir
    root.mkdir(parents=True, exist_ok=True)
    path = root / signed.policy.ceremony_id
    return Recorder.create(path, signed, signer=signer), path


def readers_since(audit_entries: Iterable[Mapping[str, Any]], env: str, path: str) -> list[str]:
    """Who read (env, path) with ``secret get``, from audit entries: the impact list."""
    who: set[str] = set()
    target = f"{env}:{path}"
    for e in audit_entries:
        if e.get("op") == "secret get" and e.get("target") == target and e.get("outcome") == "ok":
            who.add(str(e.get("actor")))
    return sorted(who)


def rotate(
    dep: Deployment,
    vault: Vault,
    env: str,
    path: str,
    signer: Any,
    *,
    verify_cmd: str | None = None,
    update_cmd: str | None = None,
    overlap_seconds: int = 86400,
    value: str | None = None,
    emergency: bool = False,
    reason: str = "",
    audit_entries: Callable[[], Iterable[Mapping[str, Any]]] | None = None,
) -> Outcome:
    """Rotate (env, path) through the seven steps; see the module docstring.

    Raises:
        PolicyError: the signer is not an enrolled super-admin, or the secret is not active.
        TranscriptError: the record could not be written (nothing was changed).
    """
    row = vault._row(env, path)
    if value is not None:  # a supplied value meets its rule before anything is recorded
        standards.check(Category(row.category), value, prefix=row.prefix)
    if row.state != "active":
        raise PolicyError(f"{env}:{path} is {row.state}", "Only an active secret is rotated.")
    if emergency and not reason:
        raise UsageError("An emergency rotation needs --reason", "Say what happened.")
    kind = "secret-emergency-rotate" if emergency else "secret-rotate"
    script = EMERGENCY_SCRIPT if emergency else SCRIPT
    signed = _policy(dep, signer, kind, script, f"{kind} {env}:{path}")
    rec, bundle = _recorder(dep, signed, signer)
    staged_by_us = False

    def steps() -> Outcome:
        nonlocal staged_by_us
        old = row.current_version
        body: dict[str, Any] = {
            "env": env,
            "path": path,
            "category": row.category,
            "old_version": old,
            "old_value_digest": vault.value_digest(env, path, old) if old else None,
        }
        if emergency:
            body["reason"] = reason[:500]
        rec.record("stage", "secret.stage", signer, {**body, "supplied": value is not None})
        if value is None:
            w = vault.generate(env, path, label="pending")
            staged_by_us = True
        else:
            w = vault.put(env, path, value, label="pending", source=f"operator:{signer.name}")
            staged_by_us = True
        staged = vault.get(env, path, label="pending").value
        new_digest = vault.value_digest(env, path, w.version)
        rec.record(
            "stage",
            "secret.stored",
            signer,
            {"new_version": w.version, "new_value_digest": new_digest, "source": w.source},
        )

        def fail(step: str, status: int, out_hash: str) -> Outcome:
            v, n = vault.discard_pending(env, path)
            paused = n >= vault.policy.max_rotation_failures
            rec.record(
                step,
                "secret.rotation-failed",
                signer,
                {
                    "step": step,
                    "exit_status": status,
                    "output_sha256": out_hash,
                    "discarded_version": v,
                    "failures_in_a_row": n,
                    "paused": paused,
                },
            )
            rec.close(signer, [signer], outcome="aborted", summary={"rotated": False})
            after = vault._row(env, path)
            if paused:
                vault.alert("rotation-paused", after, failures=n)
            return Outcome(
                env=env,
                path=path,
                ok=False,
                bundle=str(bundle),
                new_version=None,
                old_version=old,
                failures=n,
                paused=paused,
                detail=f"{step} failed with exit status {status}",
            )

        for step, cmd in (("update", update_cmd), ("verify", verify_cmd)):
            if cmd is None:
                rec.record(step, "secret." + step, signer, {"command": None, "skipped": True})
                continue
            status, out_hash = _run(cmd, staged, step)
            if status != 0:
                return fail(step, status, out_hash)
            rec.record(
                step,
                "secret." + step,
                signer,
                {
                    "command_sha256": hashlib.sha256(cmd.encode()).hexdigest(),
                    "exit_status": 0,
                    "output_sha256": out_hash,
                },
            )
        overlap = 0 if emergency else overlap_seconds
        # an older previous is revoked by the promotion; consumers that had not acked the
        # old current may still use it: they are named (acks are per version)
        drop = consumers_of(dep, vault).on_promote(env, path)
        rec.record(
            "promote",
            "secret.promote",
            signer,
            {"new_version": w.version, "previous_version": old, "overlap_seconds": overlap,
             "revoked_version": drop["dropped"], "stragglers": drop["stragglers"]},
        )  # fmt: skip
        promoted = vault.promote(env, path, overlap_seconds=overlap)
        if drop["stragglers"]:
            vault.alert("rotation-stragglers", vault._row(env, path),
                        stragglers=drop["stragglers"], revoked_version=drop["dropped"])  # fmt: skip
        if emergency:
            rec.record("revoke", "secret.revoke", signer, {"revoked_version": old, "at_once": True})
            vault.revoke_previous(env, path)
            readers = readers_since(audit_entries() if audit_entries else (), env, path)
            rec.record(
                "impact",
                "secret.impact",
                signer,
                {"readers": readers[:200], "count": len(readers), "since": row.created},
            )
            vault.alert("emergency-rotation", vault._row(env, path), readers=len(readers))
        rec.close(signer, [signer], summary={"rotated": True, "until": promoted["until"]})
        detail = f"v{w.version} is current"
        if old and not emergency:
            detail += f"; v{old} stays previous until {promoted['until']}"
        return Outcome(
            env=env,
            path=path,
            ok=True,
            bundle=str(bundle),
            new_version=w.version,
            old_version=old,
            failures=0,
            paused=False,
            detail=detail,
        )

    try:
        return steps()
    except CustodyError:
        # a refusal after the record opened: nothing is left half-done or open
        if staged_by_us and vault._row(env, path).pending_version is not None:
            vault.discard_pending(env, path)
        if not rec.closed:
            rec.close(signer, [signer], outcome="aborted", summary={"rotated": False})
        raise


def consumers_of(dep: Deployment, vault: Vault) -> Consumers:
    """The consumers' state, read-only, checked against the token's audit key (the key that
    signs it in custody serve) and the token's generation counter; an unsigned, edited,
    deleted or rolled-back state counts no acknowledgement."""
    key = HsmSigner("hsm-audit", dep.token, AUDIT_KEY_LABEL) if dep.hsm else None
    return Consumers(
        vault,
        trust=key.public if key is not None else None,
        trust_alg=key.alg if key is not None else None,  # ecdsa-p256 without CKM_EDDSA
        token=dep.token if dep.hsm else None,
        deployment=dep.config.deployment_id,
        exclusive=True,
    )


def revoke_ended(dep: Deployment, vault: Vault, signer: Any) -> list[dict[str, Any]]:
    """Revoke ``previous`` of every secret whose overlap window has ended, each recorded in a
    small bundle of its own with the consumers' acknowledgements
    (:mod:`custody.secrets.consumers`); consumers that never acknowledged ``current`` are
    named in the record and in a ``rotation-stragglers`` alert."""
    out = []
    consumers = consumers_of(dep, vault)
    for row in vault.overlaps_ended():
        acks = consumers.state(row.env, row.path)
        signed = _policy(
            dep, signer, "secret-revoke", REVOKE_SCRIPT, f"secret-revoke {row.env}:{row.path}"
        )
        rec, bundle = _recorder(dep, signed, signer)
        rec.record(
            "revoke",
            "secret.revoke",
            signer,
            {
                "env": row.env,
                "path": row.path,
                "revoked_version": row.previous_version,
                "window_ended": row.previous_until,
                "acknowledged": acks["consumers"],
                "stragglers": acks["stragglers"],
                "acks_verified": acks["verified"],
            },
        )
        if acks["stragglers"]:
            vault.alert("rotation-stragglers", row, stragglers=acks["stragglers"],
                        revoked_version=row.previous_version)  # fmt: skip
        v = vault.revoke_previous(row.env, row.path)
        rec.close(signer, [signer], summary={"revoked": v})
        out.append({"env": row.env, "path": row.path, "revoked": v, "bundle": str(bundle)})
    return out


def parse_duration(text: str) -> int:
    """``90s``, ``30m``, ``12h``, ``7d`` or plain seconds, as seconds (0 .. 90 days)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    t = text.strip().lower()
    try:
        n = int(t[:-1]) * units[t[-1]] if t and t[-1] in units else int(t)
    except ValueError:
        n = -1
    if not 0 <= n <= 90 * 86400:
        raise UsageError(f"Not a duration: {text[:20]!r}", "Use e.g. 90s, 30m, 12h or 7d.")
    return n


__all__ = ["Outcome", "consumers_of", "parse_duration", "readers_since", "revoke_ended", "rotate"]
