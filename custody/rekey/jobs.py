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
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from custody import policy
from custody.config import Config
from custody.errors import IntegrityError, UsageError
from custody.keys import wrapped as envelope
from custody.keys.hierarchy import KeyHierarchy, iso, object_digest
from custody.model import BRANCHES, KeyState
from custody.rekey import lease as rekey_lease
from custody.rekey.retire import advance_retirement, key_ages
from custody.store.sqlite import Store

DEFAULT_BATCH = 10_000
DEFAULT_SAMPLE = 1000
OBJ_CTX = b"custody/obj/"  # custody.keys.hierarchy.object_context prefix

Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanItem:
    """Objects under one old version that a job would move."""

    branch: str
    from_version: int
    to_version: int | None
    objects: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RekeyPlan:
    """What ``rekey run`` would do, and how long it should take."""

    items: tuple[PlanItem, ...]
    rotate: tuple[str, ...]
    rate: float
    due: tuple[policy.DueItem, ...]

    @property
    def total(self) -> int:
        return sum(i.objects for i in self.items)

    @property
    def eta_seconds(self) -> float:
        return self.total / self.rate if self.rate > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "items": [vars_of(i) for i in self.items],
            "rotate": list(self.rotate),
            "total": self.total,
            "rate_per_s": round(self.rate),
            "eta_seconds": round(self.eta_seconds, 1),
            "due": [d.to_json() for d in self.due],
        }


def vars_of(obj: Any) -> dict[str, Any]:
    return {k: getattr(obj, k) for k in obj.__slots__}


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


# ---------------------------------------------------------------------------- planning
def pending(store: Store, branch: str | None = None) -> list[tuple[str, int, int]]:
    """``(branch, version, objects)`` for every non-active version that still wraps objects."""
    sql = (
        "SELECT o.branch, o.kek_version, COUNT(*) FROM objects o JOIN kek_versions k "
        "ON k.branch=o.branch AND k.version=o.kek_version WHERE k.state!=?"
    )
    params: tuple[str, ...] = (KeyState.ACTIVE,)
    if branch is not None:
        sql += " AND o.branch=?"
        params += (branch,)
    rows = store.query(sql + " GROUP BY o.branch, o.kek_version ORDER BY 1, 2", params)
    return [(r[0], int(r[1]), int(r[2])) for r in rows]


def _active_versions(store: Store) -> dict[str, int]:
    rows = store.query("SELECT branch, version FROM kek_versions WHERE state=?", (KeyState.ACTIVE,))
    return {r[0]: int(r[1]) for r in rows}


def measure_rate(store: Store, n: int = 2000) -> float:
    """Measure objects/s of the rewrap pipeline on real rows, changing nothing.

    Reads up to *n* real rows, decrypts and re-encrypts same-sized envelopes under throwaway
    keys, writes the updates, then rolls the transaction back.
    """
    k = AESGCM(os.urandom(32))
    rows: list[Any] = list(store.query("SELECT id, uid, wrapped FROM objects LIMIT ?", (n,)))
    if not rows:
        rows = [
            (0, os.urandom(16), envelope.seal(os.urandom(32), "data", 1, os.urandom(32), b"x"))
        ] * 200
    sample = [(i, u, k.encrypt(b"\0" * 12, bytes(len(w) - 34), b"h" + u)) for i, u, w in rows]
    t0 = time.perf_counter()
    store.conn.execute("BEGIN IMMEDIATE")
    try:
        store.conn.execute("SELECT id, uid, wrapped FROM objects LIMIT ?", (n,)).fetchall()
        out = [
            (k.encrypt(b"\1" * 12, k.decrypt(b"\0" * 12, w, b"h" + u), b"h" + u), i)
            for i, u, w in sample
        ]
        store.conn.executemany("UPDATE objects SET wrapped=? WHERE id=?", out)
    finally:
        store.conn.execute("ROLLBACK")
    dt = time.perf_counter() - t0
    return len(sample) / dt if dt > 0 else 0.0


def plan(
    hierarchy: KeyHierarchy,
    config: Config,
    *,
    now: datetime,
    branch: str | None = None,
    due: bool = False,
) -> RekeyPlan:
    """What a run would move, which branches it would rotate first, and an estimate.

    Needs no PIN: nothing is decrypted.

    Raises:
        UsageError: unknown branch. StorageError: the store cannot be read.
    """
    if branch is not None and branch not in BRANCHES:
        raise UsageError(f"Unknown KEK branch {branch!r}", f"Use one of: {', '.join(BRANCHES)}.")
    items_due = policy.evaluate(key_ages(hierarchy, config), config.branches, now)
    rotate = _branches_to_rotate(items_due, branch) if due else ()
    active = _active_versions(hierarchy.store)
    items: list[PlanItem] = []
    for b, v, n in pending(hierarchy.store, branch):
        items.append(PlanItem(branch=b, from_version=v, to_version=active.get(b), objects=n))
    for b in rotate:  # everything under the current version moves after rotation
        cur = active.get(b)
        (n,) = hierarchy.store.query(
            "SELECT COUNT(*) FROM objects WHERE branch=? AND kek_version=?", (b, cur)
        )[0]
        if n:
            items.append(
                PlanItem(
                    branch=b, from_version=int(cur or 0), to_version=(cur or 0) + 1, objects=int(n)
                )
            )
    return RekeyPlan(
        items=tuple(items), rotate=rotate, rate=measure_rate(hierarchy.store), due=items_due
    )


def _branches_to_rotate(items: tuple[policy.DueItem, ...], branch: str | None) -> tuple[str, ...]:
    return tuple(
        sorted(
            i.key
            for i in items
            if i.key in BRANCHES
            and i.status in ("due", "overdue")
            and (branch is None or i.key == branch)
        )
    )


# ------------------------------------------------------------------------------ running
def _open_job(
    store: Store, branch: str, to_version: int, total: int, batch: int, now: datetime
) -> tuple[int, int]:
    """Resume the branch's running job for *to_version*, or start one. Returns (id, done)."""
    with store.tx() as c:
        row = c.execute(
            "SELECT id, to_version, done FROM rekey_jobs WHERE branch=? AND "
            "state='running' ORDER BY id DESC LIMIT 1",
            (branch,),
        ).fetchone()
        if row is not None and row[1] == to_version:
            c.execute(
                "UPDATE rekey_jobs SET owner_pid=?, updated=? WHERE id=?",
                (os.getpid(), iso(now), row[0]),
            )
            return int(row[0]), int(row[2])
        if row is not None:  # a newer version became current mid-job: start over to it
            c.execute(
                "UPDATE rekey_jobs SET state='superseded', finished=? WHERE id=?",
                (iso(now), row[0]),
            )
        cur = c.execute(
            "INSERT INTO rekey_jobs(branch, to_version, state, total, batch, owner_pid, started, "
            "updated) VALUES(?,?,?,?,?,?,?,?)",
            (branch, to_version, "running", total, batch, os.getpid(), iso(now), iso(now)),
        )
        return int(cur.lastrowid or 0), 0


def rewrap_batch(
    rows: list[tuple[int, bytes, bytes]],
    *,
    branch: str,
    old_version: int,
    new_version: int,
    dec: AESGCM,
    enc: AESGCM,
    stamp: str,
) -> list[tuple[bytes, int, str, int, int]]:
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
    out: list[tuple[bytes, int, str, int, int]] = []
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
                (
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


_SELECT = (
    "SELECT id, uid, wrapped FROM objects WHERE branch=? AND kek_version=? ORDER BY id LIMIT ?"
)
_UPDATE = "UPDATE objects SET wrapped=?, kek_version=?, updated=? WHERE id=? AND kek_version=?"


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
        with store.tx() as c:
            rekey_lease.renew(c, lease, now)
            rows = c.execute(_SELECT, (branch, old_version, batch)).fetchall()
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
            cur = c.executemany(_UPDATE, params)
            if cur.rowcount != len(params):
                raise rekey_lease.LeaseLost(
                    "Rows changed under the re-key job",
                    "Another writer moved them; this batch was undone.",
                )
            c.execute(
                "UPDATE rekey_jobs SET done=done+?, last_id=?, updated=? WHERE id=?",
                (len(rows), rows[-1][0], stamp, job_id),
            )
        moved += len(rows)
        if progress:
            progress(len(rows))


def verify_branch(
    hierarchy: KeyHierarchy, branch: str, version: int, *, sample: int | None
) -> tuple[int, tuple[str, ...]]:
    """Decrypt objects of *branch*/v*version* and compare them to their recorded digests.

    Args:
        sample: how many random objects; ``None`` checks them all.

    Returns:
        ``(checked, failed uids as hex)``.
    """
    sql = "SELECT uid, wrapped, digest FROM objects WHERE branch=? AND kek_version=?"
    if sample is not None:
        sql += f" ORDER BY RANDOM() LIMIT {int(sample)}"
    key = AESGCM(hierarchy.kek_plaintext(branch, version))
    hdr = envelope.header(branch, version)
    hl = len(hdr)
    checked = 0
    failed: list[str] = []
    for uid, blob, digest in hierarchy.store.conn.execute(sql, (branch, version)):
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
    reports: list[JobReport] = field(default_factory=list)

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
                self.hierarchy, branch, to, sample=None if self.verify == "all" else self.sample
            )
        now = iso(self.clock())
        with store.tx() as c:
            c.execute(
                "UPDATE rekey_jobs SET state=?, finished=?, updated=?, verified=?, "
                "verify_failed=? WHERE id=?",
                ("verify-failed" if failed else "done", now, now, checked, len(failed), job_id),
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

    Returns:
        A :class:`RunReport`; ``status="busy"`` when another live worker kept the lease.

    Raises:
        UsageError: bad arguments. IntegrityError: an object failed to decrypt or verify.
        PolicyError, HsmError, StorageError (including LeaseLost).
    """
    if batch < 1:
        raise UsageError("--batch must be at least 1", "Use a batch of 1000 to 50000.")
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
            for b in _branches_to_rotate(items, branch):
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
        )
        branches = [branch] if branch else sorted({b for b, _v, _n in pending(store)})
        jobs = [j for b in branches if (j := runner.job(lease, b)) is not None]
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
