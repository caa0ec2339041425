"""The server's hold on the deployment: worker threads that own the store and the token.

SQLite connections belong to the thread that opened them, so every store or token operation
of the server runs on one of ``workers`` dedicated threads (:class:`Backend`). Each opens the
home with the PIN at start-up (its own store connection; the token adapters share one
logged-in session and python-pkcs11 serialises their calls) and keeps it for the server's
life; the PIN itself is not kept. The event loop hands work to whichever worker is free
(:meth:`Backend.run`) and awaits the result. Access control audits every decision, so with
several workers the decisions of concurrent requests share the audit log's group commits.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from custody.access import AccessControl
from custody.access.local import access_seal
from custody.access.mfa import Mfa, MfaPolicy
from custody.access.seal import AccessSeal
from custody.access.settings import AccessSettings
from custody.audit.log import AuditLog
from custody.audit.signers import AUDIT_KEY_LABEL, HsmSigner
from custody.config import Home
from custody.deployment import Deployment, open_deployment
from custody.secrets import SecretPolicy, Vault
from custody.secrets.consumers import Consumers
from custody.store.port import Watch

T = TypeVar("T")


class Staging:
    """The audit sink the server's access control writes to: entries go straight to the
    log, except inside :meth:`held`, where this thread's entries are kept back and handed
    to the caller, who commits them in one batch with the request's own entry
    (:meth:`custody.audit.log.AuditLog.append_all`) before any answer leaves. A read then
    costs one durable commit, not two; nothing is answered until both are written. An
    ``intent`` is never held: it is committed at once (with the entries held before it),
    so it has its seq and its outcome is linked to it by ``intent_seq``."""

    def __init__(self, log: AuditLog) -> None:
        self.log = log
        self._local = threading.local()

    def append(
        self,
        op: str,
        target: str,
        actor: str,
        *,
        outcome: str = "ok",
        details: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        staged: list[dict[str, Any]] | None = getattr(self._local, "staged", None)
        if staged is None:
            return self.log.append(op, target, actor, outcome=outcome, details=details)
        e = {"op": op, "target": target, "actor": actor, "outcome": outcome,
             "details": dict(details or {})}  # fmt: skip
        if outcome == "intent":
            # an intent is on record before its operation acts, and numbered, so that its
            # outcome names it (details.intent_seq, custody.access.auditing.intended) as in
            # the CLI: it goes now, with what this request staged before it (in order)
            done = self.log.append_all([*staged, e])
            staged.clear()
            return done[-1]
        staged.append(e)
        return e

    @contextmanager
    def held(self) -> Iterator[list[dict[str, Any]]]:
        staged: list[dict[str, Any]] = []
        self._local.staged = staged
        try:
            yield staged
        finally:
            self._local.staged = None


@dataclass
class Context:
    """What a worker call gets: the opened deployment, its vault and access control."""

    dep: Deployment
    vault: Vault
    access: AccessControl
    audit: AuditLog
    staging: Staging
    consumers: Consumers
    mfa_mode: str = "enrolled"
    seal: AccessSeal | None = None
    # set by the backend around a job: the entries the job's answer waits for
    batch: list[dict[str, Any]] | None = None

    def commit_before_answer(self, entries: list[dict[str, Any]]) -> None:
        """Make *entries* durable before this job's answer (result or error) leaves: with
        the entries of every job the worker took together, in one commit after the last
        of them has run (:meth:`Backend.run`); outside a worker's batch, at once.

        Raises:
            AuditError: only at once (in a batch, each job of it gets the error instead).
        """
        if self.batch is not None:
            self.batch.extend(entries)
        else:
            self.audit.append_all(entries)


_STOP = object()
_Reply = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]"]  # where a job's answer goes
_Answer = tuple[_Reply, Any, BaseException | None]  # a job's reply, result and error


def _answer(answers: list[_Answer]) -> None:
    """Hand *answers* to their event loops: one wake-up of each loop for all of its own."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Answer]] = {}
    for a in answers:
        by_loop.setdefault(a[0][0], []).append(a)
    for loop, mine in by_loop.items():
        loop.call_soon_threadsafe(_settle, mine)


def _settle(answers: list[_Answer]) -> None:
    """On the event loop: each answer's future gets its result or error (unless the
    request has gone: a cancelled future)."""
    for (_loop, fut), result, error in answers:
        if fut.cancelled():
            continue
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(result)


_DRAIN = 64  # jobs a worker takes off the queue at once, at most


def open_context(
    home: Home,
    pin: str,
    audit: AuditLog,
    alert: Callable[[Mapping[str, Any]], None] | None = None,
) -> Context:
    """Open *home* with *pin* and build its vault and access control (with TOTP checks and
    the home's MFA mode), all auditing to *audit*.

    Raises:
        CustodyError: from :func:`~custody.deployment.open_deployment` or the config.
    """
    dep = open_deployment(home, pin)
    try:
        rng = dep.hsm.random if dep.hsm is not None else None
        seal = access_seal(dep, audit)
        vault = Vault(
            dep.store,
            dep.hierarchy,
            policy=SecretPolicy.for_home(home.config_path),
            actor="custody-server",
            alert=alert,
            rng=rng,
            seal=seal,
        )
        mfa = Mfa(
            dep.store,
            dep.hierarchy,
            audit,
            policy=MfaPolicy.for_home(home.config_path),
            rng=rng,
            seal=seal,
        )
        settings = AccessSettings.for_home(home.config_path)
        mode = settings.mfa_mode
        staging = Staging(audit)
        access = AccessControl(
            dep.store,
            staging,
            mfa=mfa,
            mfa_mode=mode,
            rng=rng or os.urandom,
            high_approvers=settings.high_approvers,
            seal=seal,
        )
        # the consumers' state and early-revocation records are signed by the token's
        # audit key (custody.secrets.consumers): the disk operator cannot forge an ack; the
        # token's counter anchors the state's generation, so a row deleted or put back is
        # caught too
        consumers = Consumers(
            vault,
            HsmSigner("hsm-audit", dep.token, AUDIT_KEY_LABEL),
            token=dep.token,
            deployment=dep.config.deployment_id,
            exclusive=True,  # the home's own token
        )
    except BaseException:
        dep.close()
        raise
    return Context(
        dep=dep, vault=vault, access=access, audit=audit, staging=staging,
        consumers=consumers, mfa_mode=mode, seal=seal,
    )  # fmt: skip


class Backend:
    """Worker threads, each owning its own opening of *home*'s deployment.

    Args:
        home: the custody home.
        pin: the token user PIN (used to log in at start, then dropped).
        audit: the shared audit log (thread-safe; group commit).
        alert: called on a worker with each vault alert.
        workers: how many worker threads.

    Raises:
        CustodyError: from :func:`open_context` (bad home or PIN).
    """

    def __init__(
        self,
        home: Home,
        pin: str,
        audit: AuditLog,
        *,
        alert: Callable[[Mapping[str, Any]], None] | None = None,
        workers: int = 1,
    ) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._seals: list[AccessSeal] = []
        self._watch: Watch | None = None
        self._watch_lock = threading.Lock()
        for i in range(max(1, workers)):
            ready = threading.Event()
            box: dict[str, BaseException] = {}
            t = threading.Thread(
                target=self._main,
                args=(home, pin, audit, alert, ready, box),
                name=f"custody-backend-{i}",
                daemon=True,
            )
            t.start()
            ready.wait()
            if "error" in box:
                self.close()
                raise box["error"]
            self._threads.append(t)

    def _main(
        self,
        home: Home,
        pin: str,
        audit: AuditLog,
        alert: Callable[[Mapping[str, Any]], None] | None,
        ready: threading.Event,
        box: dict[str, BaseException],
    ) -> None:
        try:
            ctx = open_context(home, pin, audit, alert)
        except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
            box["error"] = exc
            ready.set()
            return
        del pin
        self._watch_changes(ctx)
        ready.set()
        try:
            stop = False
            while not stop:
                jobs = [self._jobs.get()]
                while len(jobs) < _DRAIN:  # every job waiting now: one audit commit for all
                    try:
                        jobs.append(self._jobs.get_nowait())
                    except queue.Empty:
                        break
                if _STOP in jobs:  # this worker stops after the jobs it took
                    stop = True
                    for _ in range(jobs.count(_STOP) - 1):  # the other workers' stops
                        self._jobs.put(_STOP)
                    jobs = [j for j in jobs if j is not _STOP]
                self._run_batch(ctx, jobs)
        finally:
            ctx.dep.close()

    @classmethod
    def _run_batch(cls, ctx: Context, jobs: list[Any]) -> None:
        """Run *jobs* in order; a job's answer waits for the entries it handed to
        :meth:`Context.commit_before_answer`, committed for the whole batch at once (a
        failed commit fails every job that waited for it); the others answer at once.
        The answers of one commit reach the event loop in one wake-up.

        A job that is not a read (not *cached*: it may change the store) runs only after
        the entries of the reads before it are committed, so that the log never shows a
        change (a revocation, say) before a disclosure that was decided ahead of it."""
        waiting: list[_Answer] = []
        entries: list[dict[str, Any]] = []
        for fn, reply, cached in jobs:
            if not cached and waiting:
                cls._commit_batch(ctx, entries, waiting)
                waiting, entries = [], []
            mine: list[dict[str, Any]] = []
            ctx.batch = mine
            result: Any = None
            error: BaseException | None = None
            try:
                if cached:
                    with ctx.dep.store.cached_reads():
                        result = fn(ctx)
                else:
                    result = fn(ctx)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting request
                error = exc
            finally:
                ctx.batch = None
            if mine:
                entries.extend(mine)
                waiting.append((reply, result, error))
            else:
                _answer([(reply, result, error)])
        if waiting:
            cls._commit_batch(ctx, entries, waiting)

    @staticmethod
    def _commit_batch(ctx: Context, entries: list[dict[str, Any]], waiting: list[_Answer]) -> None:
        """Commit *entries* in one batch, then answer the jobs *waiting* for them (each
        with the commit's error instead, when it fails)."""
        try:
            ctx.audit.append_all(entries)
        except BaseException as exc:  # noqa: BLE001 - every job of the batch is told
            _answer([(reply, None, exc) for reply, _result, _error in waiting])
            return
        _answer(waiting)

    def _watch_changes(self, ctx: Context) -> None:
        """On PostgreSQL, one LISTEN connection per server: when any replica commits a
        change to the access rows, every worker's seal drops its checked pair at once."""
        with self._watch_lock:
            if ctx.seal is not None:
                self._seals.append(ctx.seal)
            if self._watch is None:
                self._watch = ctx.dep.store.watch_access(self._changed)

    def _changed(self, table: str) -> None:
        with self._watch_lock:
            seals = list(self._seals)
        for seal in seals:
            seal.invalidate(table)

    async def run(self, fn: Callable[[Context], T], *, cached: bool = False) -> T:
        """Run ``fn(context)`` on the worker thread and return its result (or raise).

        *cached*: for a request's short run of reads (authentication, a decision, a
        read): inside :meth:`custody.store.port.StoreCore.cached_reads`, so that the
        store's rows are read again only when something was committed since the last
        request. A long or writing job runs without it (every read goes to the file)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._jobs.put((fn, (loop, fut), cached))
        return await fut

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        alive = [t for t in self._threads if t.is_alive()]
        for _ in alive:
            self._jobs.put(_STOP)
        for t in alive:
            t.join(timeout=30)
