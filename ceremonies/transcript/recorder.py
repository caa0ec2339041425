"""The fail-closed transcript recorder.

The ceremony runner records an event *before* the action it describes takes effect:
:meth:`Recorder.record` checks the event against the policy (the same :class:`Rules` the
verifier runs), appends its line, flushes and ``fsync``\\ s (primary and optional mirror),
and only then returns. If anything fails, it raises and the runner must not act: a
:class:`TranscriptError` whose title says the action was not performed, or a
:class:`PolicyError` when the policy forbids the event. A checkpoint is written every
``policy.checkpoint_interval`` events and at :meth:`Recorder.close`.

A bundle left by a crash is re-opened with :meth:`Recorder.resume`: it re-verifies the
chain, drops a torn (half-written, never acted upon) last line, and continues the seq.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from custody.audit.merkle import MerkleTree
from custody.canonical import canonical_bytes
from custody.errors import PolicyError, TranscriptError

from .bundle import ARTIFACT_NAME, ARTIFACTS, CHECKPOINTS, EVENTS, POLICY
from .model import KIND_CLOSE, KIND_EXCEPTION, KIND_OPEN, FormatError, Sig, SignedPolicy
from .records import Approval, Checkpoint, Event, action_digest, chain_hash, event_leaf
from .rules import Rules, open_body, plural


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _append(path: Path, data: bytes) -> None:
    with open(path, "ab") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _write_new(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class Recorder:
    """Appends signed events to a bundle directory (and a mirror). Not thread-safe.

    Construct with :meth:`create` or :meth:`resume`.
    """

    def __init__(
        self, dirs: list[Path], signed: SignedPolicy, signer: Any, clock: Callable[[], float] | None
    ) -> None:
        self.dirs, self.signed, self.policy = dirs, signed, signed.policy
        self.signer = signer
        self._clock = clock or time.time
        self.rules = Rules(self.policy)
        self.events: list[Event] = []
        self.checkpoints: list[Checkpoint] = []
        self.tree = MerkleTree()
        self._head = self.policy.genesis()
        self._broken = False
        self.closed = False
        self.dropped_torn_tail = False

    # -- construction -----------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        signed: SignedPolicy,
        *,
        signer: Any,
        mirror: str | os.PathLike[str] | None = None,
        clock: Callable[[], float] | None = None,
        now: int | None = None,
    ) -> Recorder:
        """Start a new bundle at *path* and record the ``ceremony.open`` event.

        Args:
            path: a directory that does not exist yet (or is empty).
            signed: the policy, already signed by its super-admins/dealer.
            signer: the coordinator's Signer (enrolled; signs open and periodic checkpoints).
            mirror: a second directory that receives the same bytes.
            clock: returns the current Unix time; ``now`` overrides it for the open event.

        Raises:
            TranscriptError: the bundle cannot be created (exists, read-only, disk full).
            PolicyError: the signer may not open this ceremony under the policy.
        """
        dirs = [Path(path)] + ([Path(mirror)] if mirror is not None else [])
        rec = cls(dirs, signed, signer, clock)
        try:
            for d in dirs:
                if d.exists() and any(d.iterdir()):
                    raise TranscriptError(
                        f"Transcript directory {d} is not empty",
                        "Resume it with Recorder.resume, or choose a new path.",
                    )
                (d / ARTIFACTS).mkdir(parents=True, exist_ok=True)
                _write_new(d / POLICY, signed.to_bytes())
                _write_new(d / EVENTS, b"")
                _write_new(d / CHECKPOINTS, b"")
        except OSError as exc:
            raise TranscriptError(
                f"Cannot create the transcript at {dirs[0]}; the ceremony was not started",
                f"Check permissions and free space ({exc.strerror}).",
            ) from exc
        rec.record("open", KIND_OPEN, signer, open_body(signed.policy), now=now)
        return rec

    @classmethod
    def resume(
        cls,
        path: str | os.PathLike[str],
        *,
        signer: Any,
        mirror: str | os.PathLike[str] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> Recorder:
        """Re-open an interrupted bundle and continue its sequence.

        A torn last line (a write interrupted by a crash) is dropped: its action was never
        performed, because record() had not returned. The mirror is re-synced from *path*.

        Raises:
            TranscriptError: the bundle is unreadable, already closed, or does not verify.
        """
        p = Path(path)
        try:
            signed = SignedPolicy.from_json(json.loads((p / POLICY).read_bytes()))
            ev_raw = (p / EVENTS).read_bytes()
            cp_raw = (p / CHECKPOINTS).read_bytes()
        except (OSError, ValueError, FormatError) as exc:
            raise TranscriptError(
                f"Cannot resume the transcript at {p}",
                "The bundle is missing or damaged; abort the ceremony.",
            ) from exc
        rec = cls([p] + ([Path(mirror)] if mirror is not None else []), signed, signer, clock)
        try:
            ev_raw, torn1 = rec._drop_torn(p / EVENTS, ev_raw)
            cp_raw, torn2 = rec._drop_torn(p / CHECKPOINTS, cp_raw)
            rec.dropped_torn_tail = torn1 or torn2
            for line in ev_raw.splitlines():
                rec._replay(Event.from_json(json.loads(line)), line)
            for line in cp_raw.splitlines():
                rec.checkpoints.append(Checkpoint.from_json(json.loads(line)))
        except (ValueError, FormatError, OSError) as exc:
            raise TranscriptError(
                f"The transcript at {p} cannot be resumed: {exc}",
                "Verify it with 'custody transcript verify'; abort if damaged.",
            ) from exc
        last = rec.checkpoints[-1] if rec.checkpoints else None
        if rec.closed and last is not None and last.final and last.tree_size == rec.size:
            raise TranscriptError(
                "The ceremony transcript is already closed", "Start a new ceremony instead."
            )
        if mirror is not None:
            rec._resync_mirror(p, Path(mirror), ev_raw, cp_raw)
        return rec

    def _drop_torn(self, f: Path, raw: bytes) -> tuple[bytes, bool]:
        if raw and not raw.endswith(b"\n"):
            keep = raw[: raw.rfind(b"\n") + 1]
            with open(f, "r+b") as fh:
                fh.truncate(len(keep))
                os.fsync(fh.fileno())
            return keep, True
        return raw, False

    def _replay(self, ev: Event, line: bytes) -> None:
        if ev.seq != len(self.events) or ev.prev != self._head:
            raise ValueError(f"chain broken at event {ev.seq}")
        problems = self.rules.feed(ev)
        if problems:
            raise ValueError(problems[0][1])
        self._accept(ev, line)
        if ev.kind == KIND_CLOSE:
            self.closed = True

    def _resync_mirror(self, p: Path, m: Path, ev_raw: bytes, cp_raw: bytes) -> None:
        try:
            (m / ARTIFACTS).mkdir(parents=True, exist_ok=True)
            _write_new(m / POLICY, self.signed.to_bytes())
            _write_new(m / EVENTS, ev_raw)
            _write_new(m / CHECKPOINTS, cp_raw)
            for a in sorted((p / ARTIFACTS).iterdir()):
                _write_new(m / ARTIFACTS / a.name, a.read_bytes())
        except OSError as exc:
            raise TranscriptError(
                f"Cannot re-sync the mirror {m}",
                f"Fix the mirror location ({exc.strerror}) and resume again.",
            ) from exc

    # -- state ------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return len(self.events)

    def _accept(self, ev: Event, line: bytes) -> None:
        self.events.append(ev)
        self.tree.append(event_leaf(line))
        self._head = chain_hash(line)

    def _now(self, now: int | None) -> int:
        t = int(self._clock()) if now is None else int(now)
        return max(t, self.events[-1].time) if self.events else t

    def _usable(self, what: str) -> None:
        if self._broken:
            raise TranscriptError(
                f"The recorder failed earlier; {what} was not performed",
                "Fix the cause, then resume the ceremony from its transcript.",
            )
        if self.closed:
            raise TranscriptError(
                f"The transcript is closed; {what} was not performed", "Start a new ceremony."
            )

    def _write(self, name: str, data: bytes, what: str, arts: Mapping[str, bytes] = {}) -> None:
        try:
            for d in self.dirs:
                for an, blob in arts.items():
                    _write_new(d / ARTIFACTS / an, blob)
                _append(d / name, data)
        except OSError as exc:
            self._broken = True
            raise TranscriptError(
                f"Could not record {what}; the action was NOT performed",
                f"The transcript could not be written ({exc.strerror or exc}). Free space or "
                "fix permissions, then resume the ceremony.",
            ) from exc

    # -- recording --------------------------------------------------------------------
    def action_digest(self, kind: str, action_id: str, params: Mapping[str, Any]) -> str:
        """The digest approvers sign for a quorum-gated action."""
        return action_digest(self.policy.ceremony_id, kind, action_id, params)

    def record(
        self,
        step: str,
        kind: str,
        actor: Any,
        body: Mapping[str, Any],
        *,
        cosigners: Sequence[Any] = (),
        artifacts: Mapping[str, bytes] | None = None,
        now: int | None = None,
    ) -> Event:
        """Check, sign, append and fsync one event; return it. Act only after this returns.

        Args:
            step: the script step this event belongs to.
            kind: the event kind (e.g. ``hsm.generate``, ``share.issued``, a gated action).
            actor: the acting participant's Signer; signs first.
            body: canonical-JSON-able data; never secrets (KCVs, commitments, fingerprints).
            cosigners: further Signers (witnesses, exception co-signers).
            artifacts: files to store under ``artifacts/`` first; their digests are added to
                ``body["artifacts"]``.
            now: the event time (default: the clock).

        Raises:
            PolicyError: the policy forbids this event (role, quorum, order, secrets, keys).
            TranscriptError: the event could not be durably written; the action must not run.
            HsmError: an HSM-backed signer failed (nothing was written).
            ValueError, TypeError: a caller's bug (bad artifact name, non-JSON body).
        """
        what = f"'{step}' ({kind}, event {self.size})"
        self._usable(what)
        body = dict(body)
        arts = dict(artifacts or {})
        if arts:
            from .checks import artifact_ref

            for n in arts:
                if not ARTIFACT_NAME.match(n):
                    raise ValueError(f"bad artifact name {n!r}")
            body["artifacts"] = list(body.get("artifacts", [])) + [
                artifact_ref(n, b) for n, b in sorted(arts.items())
            ]
        canonical_bytes(body)  # TypeError/ValueError for a caller's bug, before signing
        base = Event(
            seq=self.size,
            prev=self._head,
            ceremony=self.policy.ceremony_id,
            time=self._now(now),
            step=step,
            kind=kind,
            actor=actor.name,
            body=body,
        )
        data = base.signing_input(self.policy.ceremony_id)
        sigs = tuple(Sig(signer=s.name, sig=s.sign(data)) for s in (actor, *cosigners))
        ev = replace(base, signatures=sigs)
        self._precheck(ev, what)
        line = ev.to_line()
        self._write(EVENTS, line + b"\n", what, arts)
        self._accept(ev, line)
        if kind == KIND_CLOSE:
            self.closed = True
        elif self.size % self.policy.checkpoint_interval == 0:
            self._checkpoint([self.signer], ev.time, final=False)
        return ev

    def _precheck(self, ev: Event, what: str) -> None:
        snap = self.rules.snapshot()
        problems = self.rules.feed(ev)
        if problems:
            self.rules.restore(snap)
            raise PolicyError(
                f"Refused to record {what}: {problems[0][1]}",
                "Nothing was recorded or performed. Fix the input and retry.",
            )

    def record_action(
        self,
        step: str,
        kind: str,
        actor: Any,
        *,
        action_id: str,
        params: Mapping[str, Any],
        approvals: Iterable[Approval],
        body: Mapping[str, Any] | None = None,
        cosigners: Sequence[Any] = (),
        now: int | None = None,
    ) -> Event:
        """Record a quorum-gated action with its approvals (see :meth:`record`).

        Raises:
            PolicyError: the approvals do not meet ``policy.thresholds[kind]``.
            TranscriptError: the event could not be durably written.
        """
        if kind not in self.policy.thresholds:
            raise ValueError(f"{kind} is not a quorum-gated action in this policy")
        full = dict(body or {})
        full.update(
            action_id=action_id,
            params=dict(params),
            action_digest=self.action_digest(kind, action_id, params),
            approvals=[a.to_json() for a in approvals],
        )
        return self.record(step, kind, actor, full, cosigners=cosigners, now=now)

    def exception(
        self,
        resume_at: str,
        reason: str,
        actor: Any,
        *,
        cosigners: Sequence[Any] = (),
        now: int | None = None,
    ) -> Event:
        """Record a co-signed deviation from the script; the next step may be *resume_at*.

        Raises:
            PolicyError: not enough ``exception_quorum`` co-signers, or unknown step.
            TranscriptError: the event could not be durably written.
        """
        return self.record(
            "exception",
            KIND_EXCEPTION,
            actor,
            {"reason": reason, "resume_at": resume_at},
            cosigners=cosigners,
            now=now,
        )

    def checkpoint(
        self, signers: Sequence[Any] | None = None, *, now: int | None = None
    ) -> Checkpoint:
        """Write a signed checkpoint now (default signer: the recorder's).

        Raises:
            TranscriptError: it could not be written.
        """
        self._usable("the checkpoint")
        return self._checkpoint(list(signers or [self.signer]), self._now(now), final=False)

    def _checkpoint(self, signers: list[Any], t: int, *, final: bool) -> Checkpoint:
        prev = self.checkpoints[-1].tree_size if self.checkpoints else 0
        base = Checkpoint(
            ceremony=self.policy.ceremony_id,
            tree_size=self.size,
            root=self.tree.root(),
            time=t,
            prev_size=prev,
            consistency=tuple(self.tree.consistency_proof(prev)),
            final=final,
        )
        data = base.signing_input(self.policy.ceremony_id)
        cp = replace(base, signatures=tuple(Sig(signer=s.name, sig=s.sign(data)) for s in signers))
        self._write(CHECKPOINTS, cp.to_line() + b"\n", f"the checkpoint at {self.size}")
        self.checkpoints.append(cp)
        return cp

    @property
    def needs_final_checkpoint(self) -> bool:
        """True after a crash between ``ceremony.close`` and its final checkpoint."""
        last = self.checkpoints[-1] if self.checkpoints else None
        return self.closed and not (last is not None and last.final and last.tree_size == self.size)

    def finish_close(self, signers: Sequence[Any], *, now: int | None = None) -> Checkpoint:
        """Write the missing final checkpoint of a resumed, already-closed transcript.

        Raises:
            TranscriptError: nothing to finish, or it could not be written.
            PolicyError: the signers do not meet the close quorum.
        """
        if not self.needs_final_checkpoint:
            raise TranscriptError(
                "There is no unfinished close to complete", "Use close() to end an open ceremony."
            )
        self._check_close_quorum(signers)
        return self._checkpoint(list(signers), self._now(now), final=True)

    def _check_close_quorum(self, signers: Sequence[Any]) -> None:
        for role, n in self.policy.close_quorum.items():
            have = {s.name for s in signers if (m := self.policy.member(s.name)) and m.role == role}
            if len(have) < n:
                raise PolicyError(
                    f"The close needs {n} {plural(role, n)}, got {len(have)}",
                    "Nothing was recorded. Have the named roles sign the close.",
                )

    def close(
        self,
        actor: Any,
        signers: Sequence[Any],
        *,
        outcome: str = "completed",
        summary: Mapping[str, Any] | None = None,
        now: int | None = None,
    ) -> Checkpoint:
        """Record ``ceremony.close`` and the final checkpoint signed by *signers*.

        Args:
            outcome: ``completed`` (the script must be finished) or ``aborted``.
            signers: Signers meeting ``policy.close_quorum`` (role -> count).

        Raises:
            PolicyError: the signers do not meet the close quorum, or the script is unfinished.
            TranscriptError: the close could not be durably written.
        """
        if outcome not in ("completed", "aborted"):
            raise ValueError("outcome must be 'completed' or 'aborted'")
        self._check_close_quorum(signers)
        body = {"outcome": outcome, "events": self.size + 1, **dict(summary or {})}
        ev = self.record("close", KIND_CLOSE, actor, body, now=now)
        return self._checkpoint(list(signers), ev.time, final=True)
