"""The scheduled jobs of a deployment, for :class:`custody.schedule.Scheduler`.

Each job is what its cron command does (``custody rekey run --due``, ``custody secret
rotate --due``, ``custody audit checkpoint --export DIR``, and the expiry warnings of
``custody rotate due`` and ``custody secret due --notify``), built over the same library
calls so that it is audited the same way. Each run opens the home afresh (store and, when
needed, the token with the PIN from *pin*) and closes it again, so that a replica holds no
token session while it stands by. Secret rotation is a ceremony-level operation (its
records are signed by *signer*), hence this module lives in ``ceremonies``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ceremonies.secret_rotation import revoke_ended, rotate
from custody import policy
from custody.access.local import local_access
from custody.audit.log import AuditLog
from custody.audit.scope import actor_name, warning_sink
from custody.audit.signers import HsmSigner
from custody.clock import utcnow
from custody.config import Home
from custody.deployment import PinSource, open_deployment
from custody.errors import ConfigError
from custody.rekey import jobs as rekey
from custody.rekey.retire import key_ages
from custody.schedule import Fence, Job
from custody.secrets.operator import operator_vault

JOBS = ("key-rotation", "secret-rotation", "checkpoint", "expiry-warnings")
HSM_AUDIT_LABEL = "audit"


def jobs(
    home: Home,
    *,
    pin: PinSource,
    signer: Any | None = None,
    export: Path | None = None,
    overlap_seconds: int = 86400,
    only: tuple[str, ...] = JOBS,
) -> tuple[Job, ...]:
    """The jobs named in *only* (in :data:`JOBS` order), over *home*.

    Args:
        home: the deployment.
        pin: the token PIN source (``--pin-file`` / ``$CUSTODY_PIN``), read per run.
        signer: signs secret-rotation records (``--key``); without it that job fails
            with a hint each time it is due (and the others still run).
        export: where the checkpoint job also writes each signed checkpoint.
        overlap_seconds: how long a rotated secret's previous value stays valid.
        only: the job names to run.

    Raises:
        ValueError: an unknown job name.
    """
    unknown = set(only) - set(JOBS)
    if unknown:
        raise ValueError(f"unknown jobs: {sorted(unknown)}")

    def key_rotation(fence: Fence) -> Mapping[str, Any]:
        fence.check()
        with open_deployment(home, pin) as dep:
            rep = rekey.run(
                dep.hierarchy,
                dep.config,
                due=True,
                audit=warning_sink(dep.home),
                progress=lambda _n: fence.check(),  # before each next batch
            )
        moved = sum(j.moved for j in rep.jobs)
        return {
            "detail": f"{rep.status}; rotated {list(rep.rotated)}; moved {moved} objects",
        }

    def secret_rotation(fence: Fence) -> Mapping[str, Any]:
        if signer is None:
            raise ConfigError(
                "Secret rotation needs a signing key",
                "Give 'custody schedule run' --key (and --passphrase-file).",
            )
        with open_deployment(home, pin) as dep:
            with local_access(dep, dep.home) as ac:  # decided and audited as the CLI does
                ac.authorize(ac.operator(actor_name()), "rotate", "*", "")
            v = operator_vault(dep, dep.home)
            outs = []
            for r in v.rotations_due():
                fence.check()  # before each rotation
                outs.append(rotate(dep, v, r.env, r.path, signer, overlap_seconds=overlap_seconds))
            fence.check()
            revoked = revoke_ended(dep, v, signer)
        ok = sum(o.ok for o in outs)
        return {
            "ok": ok == len(outs),
            "detail": f"rotated {ok} of {len(outs)} due; revoked {len(revoked)} previous",
        }

    def checkpoint(fence: Fence) -> Mapping[str, Any]:
        with open_deployment(home, pin) as dep, AuditLog.for_home(dep.home) as log:
            fence.check()
            cp = log.checkpoint(HsmSigner("hsm-audit", dep.token, HSM_AUDIT_LABEL))
            exported = log.export_checkpoints(export) if export is not None else []
        return {"detail": f"tree size {cp['tree_size']}; exported {len(exported)}"}

    def expiry_warnings(fence: Fence) -> Mapping[str, Any]:
        now = utcnow()
        with open_deployment(home) as dep:
            items = policy.evaluate(key_ages(dep.hierarchy, dep.config), dep.config.branches, now)
            warns = policy.warnings(items, deployment_id=dep.config.deployment_id, now=now)
            fence.check()  # before the hooks and the audited warnings
            hooks = policy.emit_warnings(
                warns, alert_hook=dep.config.alert_hook, audit=warning_sink(dep.home)
            )
            secrets = operator_vault(dep, dep.home).due(notify=True)
        failed = sum(not h.ok for h in hooks)
        return {
            "ok": failed == 0,
            "detail": f"{len(warns)} key warnings ({failed} hook failures); "
            f"{len(secrets)} secrets expire within 30 days",
        }

    table = {
        "key-rotation": key_rotation,
        "secret-rotation": secret_rotation,
        "checkpoint": checkpoint,
        "expiry-warnings": expiry_warnings,
    }
    return tuple(Job(name=n, run=table[n]) for n in JOBS if n in only)


__all__ = ["JOBS", "jobs"]
