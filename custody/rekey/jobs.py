"""Re-key jobs: move every wrapped object from old KEK versions to the current one.

Why this shape (see ``docs/rekey.md``):

* The HSM unwraps each KEK version once per job (:meth:`KeyHierarchy.kek_plaintext`); the
  DEKs are rewrapped in process with AES-256-GCM, because a per-object HSM round trip is
  ~50x slower on SoftHSM and worse on a networked HSM.
* Work happens in batches. Each batch is one write transaction that renews the lease, reads
  the batch, rewraps it, updates the rows (guarded by ``kek_version=old``) and advances the
  job's checkpoint row, then commits (WAL, ``synchronous=FULL``). A SIGKILL at any instant
  leaves every row either wholly old or wholly new, and always naming the version that opens
  it. Resuming simply continues: rows still under an old version are exactly the work left.
* Retirement follows the job (:mod:`custody.rekey.retire`): a version is disabled only inside
  a transaction that sees it wraps nothing.
* The lease fences every effect: each batch renews it in its own transaction, the job is
  marked done only in a transaction that renews it, and retirement starts only after one
  more renewal. A worker that stalled (a long verification) and lost the lease to another
  raises :class:`~custody.leader.LeaseLost` before its next effect.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from custody import policy
from custody.clock import iso
from custody.config import Config
from custody.errors import IntegrityError, UsageError
from custody.keys import wrapped as envelope
from custody.keys.hierarchy import KeyHierarchy, object_digest
from custody.model import BRANCHES
from custody.rekey import lease as rekey_lease
from custody.rekey.plan import (
    PlanItem,
    RekeyPlan,
    branches_to_rotate,
    measure_rate,
    pending,
    plan,
    vars_of,
)
from custody.rekey.retire import advance_retirement, key_ages
from custody.rekey.workers import Reopen, move_version_parallel
from custody.store.port import Store
from custody.store.rows import ObjectCipher, ObjectMove, StoredObject

DEFAULT_BATCH = 10_000
DEFAULT_SAMPLE = 1000
OBJ_CTX = b"custody/obj/"  # custody.keys.hierarchy.object_context prefix

Progress = Callable[[int], None]

__all__ = [
    "JobReport",
    "PlanItem",
    "RekeyPlan",
    "RunReport",
    "measure_rate",
    "move_version",
    "pending",
    "plan",
    "rewrap_batch",
    "run",
    "verify_branch",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class JobReport:
    """One finished (or resumed and finished) job of one branch."""

    job_id: int
    branch: str
    to_version: int
    moved: int
    total: int
    seconds: float
    verified: int

    @property
    def rate(self) -> float:
        return self.moved / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RunReport:
    """The outcome of :func:`run`. ``status`` is ``done``, ``nothing-to-do`` or ``busy``."""

    status: str
    jobs: tuple[JobReport, ...] = ()
    rotated: tuple[str, ...] = ()
    retired: tuple[str, ...] = ()
    warnings: tuple[dict[str, Any], ...] = ()
    holder: rekey_lease.Holder | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": True,
            "status": self.status,
            "jobs": [{**vars_of(j), "rate_per_s": round(j.rate)} for j in self.jobs],
            "moved": sum(j.moved for j in self.jobs),
            "rotated": list(self.rotated),
            "retired": list(self.retired),
            "warnings": list(self.warnings),
            "holder": vars_of(self.holder) if self.holder else None,
        }


# ------------------------------------------------------------------------------ running
def _open_job(
    store: Store, branch: str, to_version: int, total: int, batch: int, now: datetime
) -> tuple[int, int]:
    """Resume the branch's running job for *to_version*, or start one. Returns (id, done)."""
    with store.transaction():
        row = store.running_job(branch)
        if row is not None and row.to_version == to_version:
            store.take_job(row.id, pid=os.getpid(), now=iso(now))
            return row.id, row.done
        if row is not None:  # a newer version became current mid-job: start over to it
            store.supersede_job(row.id, now=iso(now))
        job_id = store.start_job(
            branch, to_version, total=total, batch=batch, pid=os.getpid(), now=iso(now)
        )
        return job_id, 0


def rewrap_batch(
    rows: list[ObjectCipher],
    *,
    branch: str,
    old_version: int,
    new_version: int,
    dec: AESGCM,
    enc: AESGCM,
    stamp: str,
) -> list[ObjectMove]:
    """Rewrap one batch in process: the hot loop of a re-key job.

    Args:
        rows: ``(id, uid, wrapped)`` rows, all under *branch*/v*old_version*.
        dec, enc: AESGCM objects of the old and new KEK (reused across batches).
        stamp: the ``updated`` time to record.

    Returns:
        ``(wrapped, new_version, stamp, id, old_version)`` update parameters.

    Raises:
        IntegrityError: an envelope names another key or fails to decrypt (names the uid).
    """
    ho = envelope.header(branch, old_version)
    hn = envelope.header(branch, new_version)
    hl = len(ho)
    body = hl + envelope.NONCE_LEN
    aad_old = ho + OBJ_CTX
    aad_new = hn + OBJ_CTX
    nonces = os.urandom(envelope.NONCE_LEN * len(rows))
    decrypt = dec.decrypt
    encrypt = enc.encrypt
    out: list[ObjectMove] = []
    append = out.append
    i = 0
    uid = b""
    try:
        for oid, uid, blob in rows:
            if blob[:hl] != ho:
                raise IntegrityError(
                    "An object's envelope disagrees with its row",
                    f"Object {uid.hex()} is damaged; the job stopped.",
                )
            n = nonces[i : i + 12]
            i += 12
            append(
                ObjectMove(
                    hn
                    + n
                    + encrypt(n, decrypt(blob[hl:body], blob[body:], aad_old + uid), aad_new + uid),
                    new_version,
                    stamp,
                    oid,
                    old_version,
                )
            )
    except InvalidTag as exc:
        raise IntegrityError(
            f"Object {uid.hex()} failed to decrypt under {branch}/v{old_version}",
            "The object is damaged or was moved; the job stopped, "
            "nothing in this batch was changed.",
        ) from exc
    return out


def move_version(
    hierarchy: KeyHierarchy,
    lease: rekey_lease.Lease,
    job_id: int,
    branch: str,
    old_version: int,
    new_version: int,
    *,
    batch: int,
    clock: Callable[[], datetime],
    progress: Progress | None = None,
) -> int:
    """Move every object of *branch*/v*old_version* to v*new_version*, batch by batch.

    Returns:
        How many objects this call moved.

    Raises:
        IntegrityError, PolicyError: a key cannot be used or an object fails to decrypt.
        LeaseLost: another worker took the lease. StorageError: the store failed.
    """
    store = hierarchy.store
    dec = AESGCM(hierarchy.kek_plaintext(branch, old_version))
    enc = AESGCM(hierarchy.kek_plaintext(branch, new_version, for_encrypt=True))
    moved = 0
    while True:
        now = clock()
        stamp = iso(now)
        with store.transaction():
            rekey_lease.renew(store, lease, now)
            rows = store.claim_objects(branch, old_version, batch)
            if not rows:
                return moved
            params = rewrap_batch(
                rows,
                branch=branch,
                old_version=old_version,
                new_version=new_version,
                dec=dec,
                enc=enc,
                stamp=stamp,
            )
            if store.move_objects(params) != len(params):
                raise rekey_lease.LeaseLost(
                    "Rows changed under the re-key job",
                    "Another writer moved them; this batch was undone.",
                )
            store.advance_job(job_id, moved=len(rows), last_id=rows[-1].id, now=stamp)
        moved += len(rows)
        if progress:
            progress(len(rows))


VERIFY_BEAT = 20_000  # objects verified between two lease renewals (well under a second)


def verify_branch(
    hierarchy: KeyHierarchy,
    branch: str,
    version: int,
    *,
    sample: int | None,
    beat: Callable[[], None] | None = None,
    beat_every: int = VERIFY_BEAT,
) -> tuple[int, tuple[str, ...]]:
    """Decrypt objects of *branch*/v*version* and compare them to their recorded digests.

    Args:
        sample: how many random objects; ``None`` checks them all.
        beat: called after every *beat_every* objects. The re-key job renews its lease
            there (a ``--verify all`` of millions of objects outlasts the lease's TTL) and
            lets the scheduler's fence stop a leader that lost its lease, mid-verify.

    Returns:
        ``(checked, failed uids as hex)``.

    Raises:
        whatever *beat* raises (LeaseLost), at once: the verification stops there.
    """
    key = AESGCM(hierarchy.kek_plaintext(branch, version))
    hdr = envelope.header(branch, version)
    hl = len(hdr)
    store = hierarchy.store
    checked = 0
    failed: list[str] = []

    def pages() -> Iterator[Iterable[StoredObject]]:
        if sample is not None:  # a bounded random pick, read at once
            yield list(store.iter_objects(branch=branch, kek_version=version, sample=sample))
            return
        after = 0
        while page := store.object_page(branch, version, after=after, limit=beat_every):
            after = page[-1][0]
            yield (o for _id, o in page)
            if beat is not None and len(page) == beat_every:
                beat()  # between pages: no read is open across the write

    for objects in pages():
        for o in objects:
            uid, blob, digest = o.uid, o.wrapped, o.digest
            checked += 1
            try:
                if blob[:hl] != hdr:
                    raise InvalidTag
                plain = key.decrypt(blob[hl : hl + 12], blob[hl + 12 :], hdr + OBJ_CTX + uid)
                if object_digest(uid, plain) != digest:
                    failed.append(uid.hex())
            except InvalidTag:
                failed.append(uid.hex())
    return checked, tuple(failed)


@dataclass(slots=True)
class _Runner:
    hierarchy: KeyHierarchy
    config: Config
    clock: Callable[[], datetime]
    batch: int
    verify: str
    sample: int
    progress: Progress | None
    workers: int = 1
    reopen: Reopen | None = None
    reports: list[JobReport] = field(default_factory=list)

    def _beat(self, lease: rekey_lease.Lease) -> None:
        """During the verify step: keep the lease (LeaseLost when another worker took it
        over), then tell the caller (the scheduler's fence checks its own lease there)."""
        store = self.hierarchy.store
        with store.transaction():
            rekey_lease.renew(store, lease, self.clock())
        if self.progress:
            self.progress(0)

    def job(self, lease: rekey_lease.Lease, branch: str) -> JobReport | None:
        store = self.hierarchy.store
        todo = [(v, n) for b, v, n in pending(store, branch)]
        if not todo:
            return None
        to = self.hierarchy.current_kek(branch).version
        job_id, done = _open_job(store, branch, to, done_total(todo), self.batch, self.clock())
        t0 = time.perf_counter()
        moved = 0
        for v, _n in todo:
            if self.workers > 1 and self.reopen is not None:
                moved += move_version_parallel(
                    store,
                    self.reopen,
                    lease,
                    job_id,
                    branch,
                    v,
                    to,
                    keys=(
                        self.hierarchy.kek_plaintext(branch, v),
                        self.hierarchy.kek_plaintext(branch, to, for_encrypt=True),
                    ),
                    rewrap=rewrap_batch,
                    workers=self.workers,
                    batch=self.batch,
                    clock=self.clock,
                    progress=self.progress,
                )
                continue
            moved += move_version(
                self.hierarchy,
                lease,
                job_id,
                branch,
                v,
                to,
                batch=self.batch,
                clock=self.clock,
                progress=self.progress,
            )
        secs = time.perf_counter() - t0
        checked = 0
        failed: tuple[str, ...] = ()
        if self.verify != "none":
            checked, failed = verify_branch(
                self.hierarchy,
                branch,
                to,
                sample=None if self.verify == "all" else self.sample,
                beat=partial(self._beat, lease),
                beat_every=VERIFY_BEAT,
            )
        with store.transaction():  # the fence: only while this worker still holds the lease
            rekey_lease.renew(store, lease, self.clock())
            store.finish_job(
                job_id,
                "verify-failed" if failed else "done",
                now=iso(self.clock()),
                verified=checked,
                verify_failed=len(failed),
            )
        if failed:
            raise IntegrityError(
                f"{len(failed)} of {checked} rewrapped objects failed verification "
                f"(first: {failed[0]})",
                "Old versions were not retired. Run 'custody rekey verify --all' and investigate.",
            )
        return JobReport(
            job_id=job_id,
            branch=branch,
            to_version=to,
            moved=moved,
            total=done + moved,
            seconds=secs,
            verified=checked,
        )


def done_total(todo: list[tuple[int, int]]) -> int:
    return sum(n for _v, n in todo)


def run(
    hierarchy: KeyHierarchy,
    config: Config,
    *,
    branch: str | None = None,
    due: bool = False,
    batch: int = DEFAULT_BATCH,
    wait: float = 0.0,
    verify: str = "sample",
    sample: int = DEFAULT_SAMPLE,
    progress: Progress | None = None,
    clock: Callable[[], datetime] | None = None,
    audit: Callable[[Mapping[str, Any]], None] | None = None,
    workers: int = 1,
    reopen: Reopen | None = None,
) -> RunReport:
    """Run (or resume) re-key jobs, then advance staged retirement.

    Args:
        hierarchy: the deployment's hierarchy, opened with the HSM.
        config: the deployment config (policy, destruction delay, alert hook).
        branch: only this branch; ``None`` means every branch with work.
        due: first rotate the KEK of every branch the policy says is due or overdue.
        batch: objects per transaction.
        wait: seconds to wait for another worker's lease before giving up cleanly.
        verify: ``sample`` (default), ``all`` or ``none`` after each job.
        sample: objects to check with ``verify="sample"``.
        progress: called with the number of objects moved after each batch.
        clock: the time source (defaults to the hierarchy's).
        audit: records each policy warning durably (see :func:`policy.emit_warnings`).
        workers: worker processes per version (:mod:`custody.rekey.workers`); more than
            one needs *reopen*.
        reopen: opens another connection to the store, for each worker.

    Returns:
        A :class:`RunReport`; ``status="busy"`` when another live worker kept the lease.

    Raises:
        UsageError: bad arguments. IntegrityError: an object failed to decrypt or verify.
        PolicyError, HsmError, StorageError (including LeaseLost).
    """
    if batch < 1:
        raise UsageError("--batch must be at least 1", "Use a batch of 1000 to 50000.")
    if not 1 <= workers <= 64 or (workers > 1 and reopen is None):
        raise UsageError("--workers must be 1 to 64", "Use about one worker per core.")
    if verify not in ("sample", "all", "none"):
        raise UsageError(f"Unknown verify mode {verify!r}", "Use sample, all or none.")
    if branch is not None and branch not in BRANCHES:
        raise UsageError(f"Unknown KEK branch {branch!r}", f"Use one of: {', '.join(BRANCHES)}.")
    clock = clock or hierarchy.clock
    store = hierarchy.store
    got = rekey_lease.acquire(store, clock=clock, wait=wait)
    if isinstance(got, rekey_lease.Holder):
        return RunReport(status="busy", holder=got)
    lease = got
    try:
        warns: tuple[dict[str, Any], ...] = ()
        rotated: list[str] = []
        if due:
            items = policy.evaluate(key_ages(hierarchy, config), config.branches, clock())
            warns = policy.warnings(items, deployment_id=config.deployment_id, now=clock())
            policy.emit_warnings(warns, alert_hook=config.alert_hook, audit=audit)
            for b in branches_to_rotate(items, branch):
                k = hierarchy.create_kek_version(b)
                rotated.append(f"{b}/v{k.version}")
        runner = _Runner(
            hierarchy=hierarchy,
            config=config,
            clock=clock,
            batch=batch,
            verify=verify,
            sample=sample,
            progress=progress,
            workers=workers,
            reopen=reopen,
        )
        branches = [branch] if branch else sorted({b for b, _v, _n in pending(store)})
        jobs = [j for b in branches if (j := runner.job(lease, b)) is not None]
        with store.transaction():  # the fence: retire nothing after the lease was lost
            rekey_lease.renew(store, lease, clock())
        retired = advance_retirement(hierarchy, config, now=clock(), branch=branch)
    finally:
        hierarchy.forget_keys()
        rekey_lease.release(store, lease)
    status = "done" if jobs or rotated or retired else "nothing-to-do"
    return RunReport(
        status=status,
        jobs=tuple(jobs),
        rotated=tuple(rotated),
        retired=tuple(retired),
        warnings=warns,
    )
