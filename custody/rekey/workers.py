"""Parallel re-key workers: ``custody rekey run --workers N``.

The coordinator (:func:`custody.rekey.jobs.run`) holds the re-key lease and unwraps the old
and the new KEK once, on the HSM. For each version to move it forks N worker processes;
each opens its own connection to the store and loops over batches, every batch one
:meth:`~custody.store.port.WorkerStore.batch_transaction` that

1. checks that the coordinator's lease is still held
   (:meth:`~custody.store.port.WorkerStore.lease_holds`, a shared lock on the lease row),
2. claims up to ``batch`` rows still under the old version (``FOR UPDATE SKIP LOCKED`` on
   PostgreSQL, so no two workers are handed the same row),
3. rewraps them in process and moves them (guarded by ``kek_version = old``),
4. advances the job's checkpoint row, and commits.

A SIGKILL of a worker at any instant rolls back only its open batch (the server aborts
the transaction of a dead connection); its rows stay under the old version and are claimed
again. The coordinator renews the lease while the workers run, and when they have all
exited it looks again: rows still under the old version are moved by a new round of
workers, so a killed worker loses nothing. An error in a worker (an object that fails to
decrypt) stops the round and is raised by the coordinator as the same typed error.

The KEK plaintexts reach the workers only through ``fork`` (process memory, never a pipe,
argv or file), exactly as they are held by a single-process job; the workers never touch
the HSM.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from custody import errors
from custody.clock import iso
from custody.errors import CustodyError, IntegrityError, StorageError
from custody.rekey import lease as rekey_lease
from custody.store.port import Store
from custody.store.rows import ObjectMove

MAX_ROUNDS = 8  # rounds of workers for one version before giving up (each must progress)

Reopen = Callable[[], Store]
"""Opens a new connection to the deployment's store (called in each worker)."""


def _worker(
    reopen: Reopen,
    token: str,
    job_id: int,
    branch: str,
    old: int,
    new: int,
    batch: int,
    keys: tuple[bytes, bytes],
    clock: Callable[[], datetime],
    rewrap_batch: Callable[..., list[ObjectMove]],
    out: Any,
) -> None:
    try:
        store = reopen()
        dec, enc = AESGCM(keys[0]), AESGCM(keys[1])
        while True:
            stamp = iso(clock())
            with store.batch_transaction():
                if not store.lease_holds(rekey_lease.LEASE_NAME, token, now=stamp):
                    raise rekey_lease.LeaseLost(
                        "This re-key worker's coordinator lost its lease",
                        "Another worker took over; this batch was not applied.",
                    )
                rows = store.claim_objects(branch, old, batch)
                if not rows:
                    break
                params = rewrap_batch(
                    rows,
                    branch=branch,
                    old_version=old,
                    new_version=new,
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
            out.put(("moved", len(rows)))
        store.close()
        out.put(("done", 0))
    except CustodyError as exc:
        out.put(("error", type(exc).__name__, exc.title, exc.hint))
        os._exit(3)
    except BaseException as exc:  # noqa: BLE001 - reported to the coordinator, typed there
        out.put(("error", "StorageError", f"A re-key worker failed ({type(exc).__name__})", ""))
        os._exit(4)


def _raise(name: str, title: str, hint: str) -> None:
    if name == "LeaseLost":
        raise rekey_lease.LeaseLost(title, hint)
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, CustodyError):
        raise cls(title, hint)
    raise StorageError(title, hint or "See the worker's log.")


def move_version_parallel(
    store: Store,
    reopen: Reopen,
    lease: rekey_lease.Lease,
    job_id: int,
    branch: str,
    old: int,
    new: int,
    *,
    keys: tuple[bytes, bytes],
    rewrap: Callable[..., list[ObjectMove]],
    workers: int,
    batch: int,
    clock: Callable[[], datetime],
    progress: Callable[[int], None] | None = None,
    on_round: Callable[[list[int]], None] | None = None,
) -> int:
    """Move every object of *branch*/v*old* to v*new* with *workers* processes.

    Args:
        store: the coordinator's own store (lease renewals, the final count).
        reopen: opens a worker's store connection (in the worker, after the fork).
        keys: the plaintexts of the old and the new KEK.
        rewrap: :func:`custody.rekey.jobs.rewrap_batch` (the same hot loop as one worker).
        on_round: called with the workers' pids when a round starts (tests kill them).

    Returns:
        How many objects were moved.

    Raises:
        IntegrityError: an object failed to decrypt (the round stopped; nothing of the
            failing batch was written). LeaseLost, StorageError.
    """
    ctx = mp.get_context("fork")
    moved = 0
    for _round in range(MAX_ROUNDS):
        left = store.count_objects(branch, old)
        if left == 0:
            return moved
        out = ctx.Queue()
        procs = [
            ctx.Process(
                target=_worker,
                args=(
                    *(reopen, lease.token, job_id, branch, old, new, batch),
                    *(keys, clock, rewrap, out),
                ),
                daemon=True,
            )
            for _ in range(max(1, min(workers, -(-left // batch))))
        ]
        for p in procs:
            p.start()
        if on_round is not None:
            on_round([p.pid for p in procs if p.pid is not None])
        failure: tuple[str, str, str] | None = None
        renew_at = time.monotonic() + lease.ttl / 3
        before = moved
        while any(p.is_alive() for p in procs) or not out.empty():
            try:
                msg = out.get(timeout=0.2)
            except queue.Empty:
                msg = None
            if msg is not None and msg[0] == "moved":
                moved += msg[1]
                if progress:
                    progress(msg[1])
            elif msg is not None and msg[0] == "error" and failure is None:
                failure = (msg[1], msg[2], msg[3])
                for p in procs:
                    with contextlib.suppress(OSError):
                        p.kill()  # stop the round: its open batches roll back
            if time.monotonic() >= renew_at:
                with store.transaction():
                    rekey_lease.renew(store, lease, clock())
                renew_at = time.monotonic() + lease.ttl / 3
        for p in procs:
            p.join(30)
        out.close()
        if failure is not None:
            _raise(*failure)
        if moved == before and store.count_objects(branch, old) == left:
            raise StorageError(
                f"Re-key workers made no progress on {branch}/v{old}",
                "See the store's log; run 'custody rekey run' again to resume.",
            )
    if store.count_objects(branch, old):
        raise IntegrityError(
            f"Objects are still under {branch}/v{old} after {MAX_ROUNDS} rounds of workers",
            "Run 'custody rekey run' again to resume; nothing was retired.",
        )
    return moved
