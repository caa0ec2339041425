"""The operational audit log: ``HOME/audit.db``, append-only, hash-chained, Merkle-checkpointed.

Every operation that touches keys or secrets calls :meth:`AuditLog.append` (or runs inside
:meth:`AuditLog.guard`) *before* it acts; if the entry cannot be committed the call raises
:class:`AuditError` and the operation must be refused.

Group commit. Appends from every thread sharing one :class:`AuditLog` are batched: the first
caller to find no batch being written becomes the leader, takes the write lock, drains
every entry queued by then (its own and the other threads'), chains the whole batch and
inserts it in one ``BEGIN IMMEDIATE`` transaction that reads the chain head inside the
transaction, so any number of writer processes serialise on SQLite's write lock and never
fork the chain. Then the leader hands the write role on (the next batch is written while
this one is flushed) and flushes the WAL with the store's group fsync, which one fsync
shares between all writers, threads or processes, that committed before it began. Only
then does any caller of the batch return. If the transaction fails (a constraint, a full
disk, a trigger) it rolls back whole and every caller of the batch gets
:class:`AuditError`; nothing of the batch is written. The SQL lives in the log's own storage
adapter, :mod:`custody.store.sqlite_audit`.

On PostgreSQL the leader's batch is staged instead, and the batches of every process that
writes the store are chained together, in one transaction, by whichever of them holds the
head lock (:meth:`custody.store.postgres_audit.PostgresAuditStore.append_staged`); a
caller returns once its entry is chained and the WAL is flushed past it, and a failed
chain fails every caller of its batch.

Values are never logged. A value that must be matched later goes in ``sensitive=`` and is
stored only as HMAC-SHA256 under the caller's audit key.
"""

from __future__ import annotations

import hmac
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from custody.audit.merkle import Frontier, MerkleTree, leaf_hash
from custody.audit.records import (
    CHECKPOINT_TYPE,
    OUTCOMES,
    PROOF_TYPE,
    TAG_CHAIN,
    TAG_HMAC,
    AuditReport,
    chain_hash,
    genesis,
    seal_input,
    sign_checkpoint,
)
from custody.audit.signers import Sealer, TrustKey
from custody.audit.verify import LineChunks, audit_report
from custody.canonical import canonical_bytes, domain_prefix
from custody.config import Home
from custody.errors import AuditError, PolicyError, StorageError
from custody.store.postgres_dialect import is_postgres_location
from custody.store.sqlite_audit import Head, SqliteAuditStore

if TYPE_CHECKING:
    from custody.store.postgres_audit import PostgresAuditStore

AUDIT_DB = "audit.db"
PARALLEL_FROM = 50_000  # entries from which verify runs a second process


def _cores() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def audit_location(root: Path) -> tuple[str | Path, Path | None]:
    """Where the audit log of the home at *root* lives, and the password file of a
    PostgreSQL one: the home's PostgreSQL store if its config names one, else
    ``root / "audit.db"``. A home with no config yet (``custody init`` in progress) has its
    file log.

    Raises:
        ConfigError: the config exists but cannot be read.
    """
    home = Home(root)
    if home.exists():
        cfg = home.load()
        if cfg.store is not None:
            return cfg.store, home.store_password_file(cfg)
    return root / AUDIT_DB, None


def describe_location(url: str) -> str:
    """A PostgreSQL URL without its query (socket paths, TLS files) for messages."""
    return url.split("?", 1)[0]


FORBIDDEN_DETAIL_KEYS = frozenset(
    {
        "pin",
        "so_pin",
        "passphrase",
        "password",
        "secret",
        "value",
        "plaintext",
        "share",
        "mnemonic",
        "private_key",
        "key_bytes",
    }
)


# The intent seq of the audited command running in this context (see :func:`attempt`).
_ATTEMPT: ContextVar[int | None] = ContextVar("custody_audit_attempt", default=None)


@contextmanager
def attempt(intent_seq: int) -> Iterator[None]:
    """Inside, every entry appended in this context that is not an intent and not an
    outcome (no ``intent_seq``) names *intent_seq* as ``details.attempt``: the access
    decisions, token checks and TOTP checks a command makes are linked to the command's
    own entries, so the monitor counts one attempt once and knows which principal it was
    (docs/monitoring.md)."""
    tok = _ATTEMPT.set(int(intent_seq))
    try:
        yield
    finally:
        _ATTEMPT.reset(tok)


_QUEUED, _TAKEN, _DONE = 0, 1, 2


class _Pending:
    """One caller's entry waiting in the batch queue; the leader fills in the rest."""

    __slots__ = ("entry", "error", "fixed", "state", "what")

    def __init__(self, entry: dict[str, Any], fixed: tuple[bytes, ...], what: str) -> None:
        self.entry = entry  # without log/seq/prev until its batch is chained
        self.fixed = fixed  # canonical bytes of actor, details, outcome, target, time
        self.what = what
        self.state = _QUEUED
        self.error: AuditError | None = None


def _refused(what: str, exc: BaseException) -> AuditError:
    cause = exc.__cause__ if isinstance(exc, StorageError) and exc.__cause__ else exc
    return AuditError(
        f"The audit log could not be written; {what} was refused",
        "Fix the audit database (disk space, permissions, locks) and retry "
        f"({type(cause).__name__}).",
    )


class AuditLog:
    """A handle on one audit database. Threads may share one handle: their appends are
    batched into group commits (see the module doc). Processes each open their own.

    Args:
        path: the database file (``HOME/audit.db``).
        audit_key: key for HMACs of sensitive values; required only when they are given.
        clock: returns Unix time; ``now=`` on each call overrides it.
        durable: each append returns only once its entry is on stable storage (the group
            flush of the WAL); False only for scratch logs.
        timeout: seconds to wait for another writer's lock before refusing.
        sealer: seals each batch's chain head with an HMAC under a token-held key
            (:class:`custody.audit.signers.HsmSealer`), for writers that hold the token.

    Raises:
        AuditError: the database cannot be opened or initialised.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        audit_key: bytes | None = None,
        clock: Callable[[], float] = time.time,
        durable: bool = True,
        rng: Callable[[int], bytes] = os.urandom,
        timeout: float = 60.0,
        sealer: Sealer | None = None,
        password_file: Path | None = None,
    ) -> None:
        pg = is_postgres_location(path)
        self.path = Path(describe_location(str(path)) if pg else path)
        where = describe_location(str(path)) if pg else str(self.path)
        self._sealer = sealer
        self._key = audit_key
        self._clock = clock
        self._io = threading.RLock()  # the connection: one batch or one read at a time
        self._cv = threading.Condition(threading.Lock())
        self._queue: list[_Pending] = []
        self._writing = False  # a leader holds the write role
        self._db: SqliteAuditStore | PostgresAuditStore
        self._pg: PostgresAuditStore | None = None  # the staged path (cross-process batches)
        try:
            if pg:
                from custody.store.postgres_audit import PostgresAuditStore  # psycopg: lazily

                self._db = PostgresAuditStore(
                    str(path),
                    durable=durable,
                    timeout=timeout,
                    new_log_id=lambda: rng(16).hex(),
                    password_file=password_file,
                )
                self._pg = self._db
            else:
                self._db = SqliteAuditStore(
                    self.path, durable=durable, timeout=timeout, new_log_id=lambda: rng(16).hex()
                )
            self.log_id = self._db.log_id
            # the line around its parts: actor, details, (log), op, outcome, prev, seq,
            # target, time, in RFC 8785 key order
            self._lits = (
                b'{"actor":',
                b',"details":',
                b',"log":' + canonical_bytes(self.log_id) + b',"op":',
                b',"outcome":',
                b',"prev":"',
                b'","seq":',
                b',"target":',
                b',"time":',
                b"}",
            )
        except StorageError as exc:
            raise AuditError(
                f"Cannot open the audit log {where}",
                "Check the path, permissions and free space.",
            ) from exc

    @classmethod
    def for_home(cls, home: Any, **kw: Any) -> AuditLog:
        """The log of a custody home: ``home.root / "audit.db"``, or the ``audit_*`` tables
        of its PostgreSQL store when its config names one (``store = "postgresql://..."``),
        so that every replica and worker writes one chain.

        Raises:
            AuditError: the log cannot be opened. ConfigError: the config is unreadable.
        """
        loc, pwfile = audit_location(Path(home.root))
        return cls(loc, password_file=pwfile, **kw)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ----------------------------------------------------------------------
    def hmac(self, name: str, value: str | bytes) -> str:
        """HMAC-SHA256 of a sensitive value under the audit key (hex)."""
        if self._key is None:
            raise ValueError("sensitive values need an audit key")
        v = value.encode() if isinstance(value, str) else value
        msg = TAG_HMAC.encode() + b"\0" + name.encode() + b"\0" + v
        return hmac.new(self._key, msg, "sha256").hexdigest()

    def append(
        self,
        op: str,
        target: str,
        actor: str,
        *,
        outcome: str = "ok",
        details: Mapping[str, Any] | None = None,
        sensitive: Mapping[str, str | bytes] | None = None,
        now: int | None = None,
    ) -> dict[str, Any]:
        """Commit one entry and return it. Call before the operation it records.

        Raises:
            AuditError: the entry could not be committed; the operation must not run.
            ValueError: a caller's bug (unknown outcome, a value-like detail key, no key).
        """
        req = self._pending(op, target, actor, outcome, details, sensitive, now)
        self._commit([req])
        return req.entry

    def append_all(self, entries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Commit several entries in one batch (one transaction, one flush), in order, and
        return them. Each is a mapping of :meth:`append`'s arguments (``op``, ``target``,
        ``actor``, ``outcome``, ``details``). All are written, or none.

        Raises:
            AuditError: the batch could not be committed.
            ValueError: as :meth:`append`, before anything is queued.
        """
        reqs = [
            self._pending(e["op"], e["target"], e["actor"], e.get("outcome", "ok"),
                          e.get("details"), None, None)
            for e in entries
        ]  # fmt: skip
        self._commit(reqs)
        return [r.entry for r in reqs]

    def _pending(
        self,
        op: str,
        target: str,
        actor: str,
        outcome: str,
        details: Mapping[str, Any] | None,
        sensitive: Mapping[str, str | bytes] | None,
        now: int | None,
    ) -> _Pending:
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}")
        det = dict(details or {})
        bad = [k for k in det if k.lower() in FORBIDDEN_DETAIL_KEYS]
        if bad:
            raise ValueError(f"detail keys {bad} look like values; pass them as sensitive=")
        for k, v in (sensitive or {}).items():
            det[f"{k}_hmac"] = self.hmac(k, v)
        link = _ATTEMPT.get()
        if link is not None and outcome != "intent" and "intent_seq" not in det:
            det.setdefault("attempt", link)
        t = int(self._clock()) if now is None else int(now)
        entry: dict[str, Any] = {
            "actor": actor,
            "details": det,
            "op": op,
            "outcome": outcome,
            "target": target,
            "time": t,
        }
        # Canonical bytes of everything but log/seq/prev, made here in the caller's thread
        # (a value that cannot be canonicalised is the caller's ValueError, before queueing);
        # the leader only splices in the chain fields, in RFC 8785 key order.
        fixed = tuple(canonical_bytes(entry[k]) for k in ("actor", "details", "op", "outcome"))
        fixed += (canonical_bytes(target), canonical_bytes(t))
        return _Pending(entry, fixed, f"'{op} {target}'")

    def _commit(self, reqs: list[_Pending]) -> None:
        """Queue *reqs* together (so one leader drains them into one batch) and wait until
        every one is written, leading a batch when none is being written."""
        lead = False
        with self._cv:
            self._queue.extend(reqs)
            while any(r.state != _DONE for r in reqs):
                if any(r.state == _QUEUED for r in reqs) and not self._writing:
                    self._writing = lead = True
                    break
                self._cv.wait()
        if lead:
            self._lead()
            with self._cv:  # a batch drained them all; wait for its flush if another led
                while any(r.state != _DONE for r in reqs):
                    self._cv.wait()
        for r in reqs:
            if r.error is not None:
                raise r.error

    def _seal_fn(self) -> Callable[[int, bytes], bytes] | None:
        sealer = self._sealer
        if sealer is None:
            return None
        return lambda seq, chain: sealer.mac(seal_input(self.log_id, seq, chain))

    def seal(self, sealer: Sealer) -> int | None:
        """Seal the current chain head under *sealer* (e.g. from ``audit checkpoint
        --seal``). Returns the sealed seq (None for an empty log).

        Raises:
            AuditError: the seal could not be stored.
            HsmError: from the sealer.
        """
        with self._io, self._db.snapshot():
            n = self._db.size()
            last = self._db.lines(n - 1, n) if n else []
        if not last:
            return None
        mac = sealer.mac(seal_input(self.log_id, n - 1, chain_hash(last[0])))
        try:
            with self._io:
                self._db.put_seal(n - 1, mac)
        except StorageError as exc:
            raise _refused("the seal", exc) from exc
        return n - 1

    def _splice(self, fixed: Sequence[bytes], seq: int, prev: bytes) -> tuple[bytes, bytes]:
        """The canonical line of an entry from its fixed parts (actor, details, op,
        outcome, target, time) at *seq* after chain hash *prev*, and its chain hash: the
        chain fields spliced into the template :attr:`_lits`, in RFC 8785 key order (a
        PostgreSQL chainer splices the same template, in SQL)."""
        actor, details, op, outcome, target, t = fixed
        l1, l2, l3, l4, l5, l6, l7, l8, l9 = self._lits
        line = b"".join(
            (l1, actor, l2, details, l3, op, l4, outcome, l5, prev.hex().encode(), l6,
             str(seq).encode(), l7, target, l8, t, l9)
        )  # fmt: skip
        return line, chain_hash(line)

    def _lead(self) -> None:
        """Write one batch: everything queued once the write lock is held; then flush it."""
        if self._pg is not None:
            self._lead_staged(self._pg)
            return
        batch: list[_Pending] = []

        def build(head: Head) -> list[tuple[int, bytes, bytes]]:
            with self._cv:
                batch.extend(self._queue)
                self._queue.clear()
                for r in batch:
                    r.state = _TAKEN
            seq, prev = (0, genesis(self.log_id)) if head is None else (head[0] + 1, head[1])
            rows = []
            for r in batch:
                line, chain = self._splice(r.fixed, seq, prev)
                r.entry.update({"log": self.log_id, "seq": seq, "prev": prev.hex()})
                rows.append((seq, line, chain))
                prev = chain
                seq += 1
            return rows

        failure: BaseException | None = None
        last = None
        try:
            with self._io:
                last = self._db.append_batch(build, self._seal_fn())
        except BaseException as exc:  # noqa: BLE001 - every caller of the batch is told
            failure = exc
        finally:
            with self._cv:  # hand the write role on: the next batch goes in while we flush
                self._writing = False
                self._cv.notify_all()
        if failure is not None and not batch:  # it failed before draining (lock, BEGIN)
            with self._cv:
                batch.extend(self._queue)
                self._queue.clear()
        if failure is None and last is not None:
            try:
                self._db.sync(last)
            except BaseException as exc:  # noqa: BLE001 - every caller of the batch is told
                failure = exc
        self._finish(batch, failure)

    def _finish(self, batch: list[_Pending], failure: BaseException | None) -> None:
        """Tell every caller of *batch* it is done: each gets *failure* (as its refusal)
        when the batch failed. A failure that is not an Exception (KeyboardInterrupt and
        the like) is raised again, so that it still stops the leader."""
        with self._cv:
            for r in batch:
                if failure is not None:
                    r.error = _refused(r.what, failure)
                r.state = _DONE
            self._cv.notify_all()
        if failure is not None and not isinstance(failure, Exception):
            raise failure

    def _lead_staged(self, pg: PostgresAuditStore) -> None:
        """Write one batch on PostgreSQL: stage everything queued by now and wait until a
        chainer (this process or another) has chained it, durably when this log is."""
        with self._cv:
            batch = list(self._queue)
            self._queue.clear()
            for r in batch:
                r.state = _TAKEN
        failure: BaseException | None = None
        try:
            with self._io:
                done = pg.append_staged(
                    [r.fixed for r in batch],
                    self._lits,
                    domain_prefix(TAG_CHAIN),
                    genesis(self.log_id),
                )
                if self._sealer is not None:  # the head as this batch left it
                    seq, prev = done[-1]
                    _line, chain = self._splice(batch[-1].fixed, seq, prev)
                    pg.put_seal(seq, self._sealer.mac(seal_input(self.log_id, seq, chain)))
            for r, (seq, prev) in zip(batch, done, strict=True):
                r.entry.update({"log": self.log_id, "seq": seq, "prev": prev.hex()})
        except BaseException as exc:  # noqa: BLE001 - every caller of the batch is told
            failure = exc
        finally:
            with self._cv:  # hand the write role on
                self._writing = False
                self._cv.notify_all()
        self._finish(batch, failure)

    @contextmanager
    def guard(
        self,
        op: str,
        target: str,
        actor: str,
        *,
        details: Mapping[str, Any] | None = None,
        sensitive: Mapping[str, str | bytes] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Log intent, run the block, then log ``ok``, ``denied`` (PolicyError) or ``failed``.

        If the intent cannot be logged, AuditError is raised and the block never runs.

        Raises:
            AuditError: the intent entry could not be committed (operation refused).
        """
        first = self.append(
            op, target, actor, outcome="intent", details=details, sensitive=sensitive
        )
        ref = {"intent_seq": first["seq"]}
        try:
            yield first
        except PolicyError as exc:
            self.append(op, target, actor, outcome="denied", details={**ref, "error": exc.title})
            raise
        except BaseException as exc:
            self.append(
                op, target, actor, outcome="failed", details={**ref, "error": type(exc).__name__}
            )
            raise
        self.append(op, target, actor, outcome="ok", details=ref)

    # -- reading ----------------------------------------------------------------------
    def size(self) -> int:
        """Raises StorageError (AuditStoreError) when the database cannot be read."""
        with self._io:
            return self._db.size()

    def lines(self, start: int = 0, end: int | None = None) -> list[bytes]:
        with self._io:
            return self._db.lines(start, end)

    def checkpoint_lines(self) -> list[bytes]:
        with self._io:
            return self._db.checkpoint_lines()

    def iter_lines(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Stream entry lines (hold :meth:`snapshot` around it for one consistent read)."""
        return self._db.iter_lines(start, end)

    def verify(
        self,
        trust: Sequence[TrustKey] | None = None,
        *,
        witnesses: Sequence[tuple[str, Mapping[str, Any]]] = (),
        known: Mapping[str, Any] | None = None,
        max_age: int | None = None,
        max_behind: int | None = None,
        progress: Callable[[int], None] | None = None,
        now: int | None = None,
        sealer: Sealer | None = None,
        parallel: bool | None = None,
    ) -> AuditReport:
        """Verify the whole log, streamed from one consistent read snapshot (flat memory).

        See :func:`custody.audit.verify.audit_report` for what is checked. *parallel*
        verifies blocks of entries on a second process too; the default is to do so when
        the log holds at least ``PARALLEL_FROM`` entries and this process may run on two
        CPUs or more.
        """
        t = int(self._clock()) if now is None else int(now)
        with self._io, self._db.snapshot():
            seal = self._db.last_seal() if sealer is not None else None
            if parallel is None:
                parallel = _cores() >= 2 and self._db.size() >= PARALLEL_FROM
            return audit_report(
                self.log_id,
                LineChunks(self._db.iter_chunks()),
                self._db.checkpoint_lines(),
                trust,
                witnesses=witnesses,
                known=known,
                now=t,
                max_age=max_age,
                max_behind=max_behind,
                progress=progress,
                sealer=sealer,
                seal=seal,
                parallel=parallel,
            )

    # -- checkpoints and proofs -------------------------------------------------------
    def checkpoint(self, signer: Any, *, now: int | None = None) -> dict[str, Any]:
        """Sign and store a checkpoint over every entry so far (signer: Signer protocol).

        Raises:
            AuditError: it could not be stored.
            HsmError: from an HSM-backed signer.
        """
        t = int(self._clock()) if now is None else int(now)
        frontier = Frontier()
        with self._io, self._db.snapshot():
            for ln in self._db.iter_lines():
                frontier.append_hash(leaf_hash(ln))
        payload = {
            "type": CHECKPOINT_TYPE,
            "log": self.log_id,
            "tree_size": frontier.size,
            "root": frontier.root().hex(),
            "time": t,
        }
        cp = sign_checkpoint(payload, signer)
        try:
            with self._io:
                self._db.put_checkpoint(frontier.size, canonical_bytes(cp))
        except StorageError as exc:
            raise _refused("the checkpoint", exc) from exc
        return cp

    def export_checkpoints(self, directory: Path) -> list[str]:
        """Write every stored checkpoint not yet in *directory* (a witness directory or WORM
        path) as ``<log id>-<tree size>.json``; never overwrite one. Returns the new names.

        Raises:
            AuditError: the directory cannot be written, or it holds a *different*
                checkpoint of the same size (a forked or rewritten log).
        """
        import json

        written = []
        try:
            directory.mkdir(parents=True, exist_ok=True)
            for raw in self.checkpoint_lines():
                size = int(json.loads(raw)["tree_size"])
                name = f"{self.log_id}-{size:012d}.json"
                dest = directory / name
                if dest.exists():
                    if dest.read_bytes().rstrip(b"\n") != raw:
                        raise AuditError(
                            f"{dest} holds a different checkpoint at tree size {size}",
                            "The log was rewritten or forked; audit it with 'custody audit "
                            f"verify --witness {directory}'.",
                        )
                    continue
                fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
                try:
                    os.write(fd, raw + b"\n")
                    os.fsync(fd)
                finally:
                    os.close(fd)
                written.append(name)
            if written:
                dfd = os.open(directory, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
        except (OSError, ValueError, KeyError) as exc:
            raise AuditError(
                f"Cannot export checkpoints to {directory}",
                f"Check the directory and its permissions ({type(exc).__name__}).",
            ) from exc
        return written

    def proof(self, index: int, *, tree_size: int | None = None) -> dict[str, Any]:
        """A self-contained inclusion proof of entry *index* under a stored checkpoint.

        Uses the latest checkpoint (or the one at *tree_size*) that covers the entry.

        Raises:
            AuditError: no such entry, or no checkpoint covers it yet.
        """
        import json

        cps = [json.loads(c) for c in self.checkpoint_lines()]
        cps = [
            c
            for c in cps
            if c["tree_size"] > index and (tree_size is None or c["tree_size"] == tree_size)
        ]
        if index < 0 or index >= self.size():
            raise AuditError(f"No audit entry {index}", f"The log has {self.size()} entries.")
        if not cps:
            raise AuditError(
                f"No checkpoint covers entry {index} yet", "Run 'custody audit checkpoint' first."
            )
        cp = cps[-1]
        lines = self.lines(0, cp["tree_size"])
        tree = MerkleTree(leaf_hash(ln) for ln in lines)
        return {
            "type": PROOF_TYPE,
            "leaf_index": index,
            "entry": json.loads(lines[index]),
            "inclusion": [h.hex() for h in tree.inclusion_proof(index, cp["tree_size"])],
            "checkpoint": cp,
        }
