"""Ceremony services for the TUI: one :class:`CeremonySession` drives the CLI's runner.

The ceremony screens never open the store, the token or a file. They call a
:class:`CeremonyServices` object from thread workers and get back frozen view models
(:class:`CeremonyView`, :class:`ShareCheck`, :class:`CardView`). The real implementation,
:class:`HomeCeremonyServices`, opens the deployment and drives
:class:`ceremonies.runner.CeremonyRunner` through its public API only (``start``,
``resume``, ``run``, ``abort``), exactly as ``custody ceremony`` does; the snapshot tests
inject :class:`tui.fakes.StaticCeremonyServices` with fixed data.

Share hand-in. Custodians hand in shares one by one; each is checked live *before* it is
counted (:func:`check_words`, :func:`check_share`): unknown words and a failing RS1024
checksum are located at the word (SLIP-0039), the share is matched by its commitment
against the share set (so a share of another set or epoch is named as such), and its
envelope is verified against the pinned dealer key. When the shares that passed reach the
quorum, all hand-ins, including the rejected ones, go to the runner in one run, so the
transcript records every rejection by custodian, exactly as the CLI does.

Secrets: share words live only in :class:`ShareInput` (``repr=False``) inside the session
until they are handed to the runner; passphrases and PINs are arguments, never attributes.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from custody.errors import CeremonyError, ConfigError, CustodyError, ShareError, UsageError
from tui.services.ceremony_checks import (
    GroupProgress,
    QuorumView,
    ShareCheck,
    ShareSet,
    WordState,
    check_share,
    check_words,
    complete_word,
    quorum_of,
)
from tui.services.ceremony_remote import OfferView, offer_view, read_sealed, sealed_result
from tui.services.ceremony_views import (
    INPUT_ASKS,
    STEP_INFO,
    ApprovalRow,
    CardView,
    CeremonyView,
    StepRow,
    _params,
    card_view,
    export_card,
    public_facts,
    read_envelope,
    step_rows,
)

DUPLICATE = "this custodian already handed in a share"


class CeremonyServices(Protocol):
    """What the ceremony screens need. Every method may raise a CustodyError."""

    def open_ceremonies(self) -> list[dict[str, Any]]: ...
    def start(
        self, kind: str, key_path: str, passphrase: str, params: dict[str, Any]
    ) -> CeremonyView: ...
    def resume(self, ceremony_id: str, key_path: str, passphrase: str) -> CeremonyView: ...
    def view(self) -> CeremonyView | None: ...
    def check(self, source: str, text: str, envelope: str) -> ShareCheck: ...
    def hand_in(self, source: str, text: str, envelope: str) -> CeremonyView: ...
    def add_approval_file(self, path: str) -> CeremonyView: ...
    def sign_approval(self, key_path: str, passphrase: str) -> CeremonyView: ...
    def submit(self) -> CeremonyView: ...
    def abort(self, reason: str) -> CeremonyView: ...
    def offer(self, ttl: int = 900) -> CeremonyView: ...
    def hand_in_sealed(self, blob: str) -> CeremonyView: ...
    def card(self, name: str) -> CardView: ...
    def export_card(self, name: str, path: str) -> Path: ...
    def close(self) -> None: ...


class HomeCeremonyServices:
    """Drives one ceremony at a time on a real home (store + token) through the runner.

    Not thread-safe by itself: every method takes :attr:`_lock`, so workers queue up. The
    token PIN comes from ``pin()`` (the app's session PIN); it is passed straight to
    ``open_deployment`` and never kept here.
    """

    def __init__(
        self,
        home: Path,
        pin: Callable[[], str | None],
        clock: Callable[[], int] = lambda: int(time.time()),
    ) -> None:
        self.home = Path(home)
        self._pin = pin
        self.clock = clock
        self._lock = threading.RLock()
        self._dep: Any = None
        self._runner: Any = None
        self._signer: Any = None  # the coordinator's signer (a TokenSigner is closed with us)
        self._outcome: Any = None
        self._handins: list[tuple[Any, ShareCheck]] = []  # (ShareInput | None, check)
        self._approvals: list[Any] = []
        self._round: str | None = None
        self._offer: OfferView | None = None
        self._sas: list[tuple[str, str]] = []  # (custodian or source, SAS) of remote hand-ins
        self._sealed_n = 0
        # SQLite connections and the PKCS#11 session belong to the thread that opened
        # them: every call runs on this one thread (the UI's workers just wait on it).
        from concurrent.futures import ThreadPoolExecutor

        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ceremony")
        for name in (
            "open_ceremonies",
            "start",
            "resume",
            "view",
            "check",
            "hand_in",
            "offer",
            "hand_in_sealed",
            "add_approval_file",
            "sign_approval",
            "submit",
            "abort",
            "card",
            "export_card",
            "close",
        ):
            setattr(self, name, self._on_thread(getattr(self, name)))

    def _on_thread(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            if threading.current_thread().name.startswith("ceremony"):
                return fn(*args)
            return self._thread.submit(fn, *args).result()

        call.__name__ = fn.__name__
        call.__doc__ = fn.__doc__
        return call

    def __repr__(self) -> str:
        return f"HomeCeremonyServices(home={str(self.home)!r}, open={self._runner is not None})"

    # -- opening --------------------------------------------------------------------
    def _open(self, need_hsm: bool) -> Any:
        from custody.config import Home
        from custody.deployment import open_deployment

        self.close()
        pin = self._pin() if need_hsm else None
        if need_hsm and pin is None:
            raise UsageError(
                "The token PIN is needed for this ceremony",
                "Press p on the dashboard to enter it, or start custody tui with --pin-file.",
            )
        self._dep = open_deployment(Home(self.home), pin)
        return self._dep

    def open_ceremonies(self) -> list[dict[str, Any]]:
        from ceremonies.runner import open_ceremonies
        from custody.config import Home
        from custody.deployment import open_deployment

        with self._lock, open_deployment(Home(self.home)) as dep:
            return open_ceremonies(dep)

    def start(
        self, kind: str, key_path: str, passphrase: str, params: dict[str, Any]
    ) -> CeremonyView:
        """Open a new ceremony of *kind* (as ``custody ceremony KIND``) and run it until it
        needs people.

        Raises:
            UsageError: bad parameters or no PIN. PolicyError: the key is not a super-admin's.
            CeremonyError: another ceremony is open. Anything the runner raises.
        """
        from ceremonies.participants import load_signer
        from ceremonies.runner import CeremonyRunner
        from ceremonies.runner.steps import active_share_set, quorum_size
        from ceremonies.transcript.model import Threshold

        with self._lock:
            signer = self._signer_for(load_signer(Path(key_path).expanduser(), passphrase))
            dep = self._open(need_hsm=kind != "drill")
            thresholds = None
            if kind == "rotate-root":
                sset = active_share_set(dep.store)
                if sset is None:
                    raise CeremonyError("No share set", "Run the generate ceremony first.")
                thresholds = {
                    "rotate-root": Threshold(role="custodian", count=quorum_size(sset["scheme"]))
                }
            with self._audit(f"ceremony {kind}", kind):
                self._runner = CeremonyRunner.start(
                    dep,
                    kind,
                    signer,
                    params=_params(kind, params),
                    thresholds=thresholds,
                    clock=self.clock,
                )
                return self._run_unaudited()

    def resume(self, ceremony_id: str, key_path: str, passphrase: str) -> CeremonyView:
        from ceremonies.participants import load_signer
        from ceremonies.runner import CeremonyRunner

        with self._lock:
            signer = self._signer_for(load_signer(Path(key_path).expanduser(), passphrase))
            dep = self._open(need_hsm=True)
            with self._audit("ceremony resume", ceremony_id):
                self._runner = CeremonyRunner.resume(dep, ceremony_id, signer, clock=self.clock)
                return self._run_unaudited()

    # -- running ----------------------------------------------------------------------
    @contextmanager
    def _audit(self, op: str, target: str) -> Iterator[None]:
        """Record the step in the home's audit log like the CLI does (intent first; an
        unwritable log refuses the action), marked ``via: tui``."""
        from custody.audit.log import AuditLog
        from custody.audit.scope import actor_name
        from custody.config import Home

        with (
            AuditLog.for_home(Home(self.home)) as log,
            log.guard(op, target, actor_name(), details={"via": "tui"}),
        ):
            yield

    def _run(self, inputs: Any = None) -> CeremonyView:
        r = self._need()
        with self._audit("ceremony resume", r.ceremony_id):
            return self._run_unaudited(inputs)

    def _run_unaudited(self, inputs: Any = None) -> CeremonyView:
        from ceremonies.runner import Inputs

        r = self._need()
        self._outcome = r.run(inputs if inputs is not None else Inputs())
        return self._view()

    def _need(self) -> Any:
        if self._runner is None:
            raise UsageError(
                "No ceremony is open on this screen", "Start one with n, or resume one with o."
            )
        return self._runner

    def view(self) -> CeremonyView | None:
        with self._lock:
            return self._view() if self._runner is not None else None

    def _share_set(self) -> ShareSet | None:
        from ceremonies.runner.steps import active_share_set

        r = self._need()
        step = self._outcome.step if self._outcome is not None else None
        if step == "verify-shares":
            f = r.state.facts
            return ShareSet(
                epoch=f["epoch"],
                ceremony_id=r.ceremony_id,
                dealer=bytes.fromhex(f["dealer_public"]),
                scheme=f["scheme"],
                holders={
                    (h["group"] - 1, h["member"] - 1): {
                        "name": h["custodian"],
                        "fingerprint": h["custodian_fingerprint"],
                        "commitment": h["commitment"],
                    }
                    for h in f["holders"]
                },
            )
        s = active_share_set(r.dep.store)
        if s is None:
            return None
        retired = []
        for old in r.dep.store.retired_share_sets():
            commitments = {(h.group_index, h.member_index): h.commitment for h in old.holders}
            retired.append((old.epoch, old.ceremony_id, commitments))
        return ShareSet(
            epoch=s["epoch"],
            ceremony_id=s["ceremony_id"],
            dealer=s["dealer"],
            scheme=s["scheme"],
            holders=s["holders"],
            retired=tuple(retired),
        )

    def check(self, source: str, text: str, envelope: str) -> ShareCheck:
        """Check a share as typed, without handing it in."""
        with self._lock:
            env = read_envelope(envelope) if envelope.strip() else None
            return check_share(source, text, env, self._share_set())

    def hand_in(self, source: str, text: str, envelope: str) -> CeremonyView:
        """Hand in one share: check it, list it, and run the step once the shares that
        passed reach the quorum (rejected ones go along, so the transcript names them).

        Raises:
            UsageError: the ceremony is not waiting for shares, or the share is incomplete.
        """
        from ceremonies.runner import ShareInput

        with self._lock:
            self._require("shares")
            env = read_envelope(envelope)
            sset = self._share_set()
            c = check_share(source, text, env, sset)
            if c.status == "incomplete":
                raise UsageError(
                    f"The share of {c.custodian or source} is incomplete: {c.reason}",
                    "Type all its words and give its envelope.",
                )
            if c.status == "ok" and any(
                x.custodian == c.custodian and x.status == "ok" for _, x in self._handins
            ):
                c = replace(c, status="rejected", reason=DUPLICATE)
            words = check_words(text)
            full = " ".join(w.word or w.typed for w in words)
            si = (
                ShareInput(source=c.custodian or source, text=full, envelope=env)
                if env is not None and c.reason != DUPLICATE
                else None
            )
            self._handins.append((si, c))
            if sset is not None and quorum_of(sset, [x for _, x in self._handins]).met:
                return self._submit_shares()
            return self._view()

    def _require(self, what: str) -> None:
        o = self._outcome
        if o is None or o.status != "awaiting-input" or o.awaiting != what:
            raise UsageError(
                f"The ceremony is not waiting for {what}",
                "See the step list for what it needs now.",
            )

    def _submit_shares(self) -> CeremonyView:
        from ceremonies.runner import Inputs

        shares = [si for si, _ in self._handins if si is not None]
        view = self._run(Inputs(shares=shares))
        self._handins = [(None, c) for _, c in self._handins]  # words forgotten
        return view

    def add_approval_file(self, path: str) -> CeremonyView:
        from ceremonies.transcript.records import Approval
        from custody.errors import TranscriptError

        with self._lock:
            self._require("approvals")
            try:
                a = Approval.from_json(json.loads(Path(path).expanduser().read_text()))
            except (OSError, ValueError, TranscriptError) as exc:
                raise ConfigError(
                    f"{Path(path).name} is not an approval file",
                    "Use a file written by 'custody ceremony approve'.",
                ) from exc
            return self._add_approval(a)

    def sign_approval(self, key_path: str, passphrase: str) -> CeremonyView:
        """A participant signs the current approval request with their own key here."""
        from ceremonies.participants import load_signer
        from ceremonies.transcript.records import Approval

        with self._lock:
            self._require("approvals")
            req = self._outcome.request
            if not req:
                raise CeremonyError(
                    "There is no approval request to sign",
                    "Resume the ceremony so that it states its request.",
                )
            signer = load_signer(Path(key_path).expanduser(), passphrase)
            try:
                a = Approval.create(
                    signer,
                    ceremony_id=req["ceremony_id"],
                    action=req["action"],
                    action_id=req["action_id"],
                    digest=req["action_digest"],
                    now=self.clock(),
                    window=int(req.get("window", 600)),
                )
            finally:
                close = getattr(signer, "close", None)
                if callable(close):
                    close()  # a one-shot signature: release a token-held key's session
            return self._add_approval(a)

    def _add_approval(self, a: Any) -> CeremonyView:
        self._approvals = [x for x in self._approvals if x.approver != a.approver] + [a]
        req = self._outcome.request or {}
        now = self.clock()
        valid = {x.approver for x in self._approvals if x.expires_at >= now}
        if req and len(valid) >= int(req.get("needed", 1 << 30)):
            return self.submit()
        return self._view()

    def submit(self) -> CeremonyView:
        """Hand what was collected to the runner now (shares or approvals)."""
        from ceremonies.runner import Inputs

        with self._lock:
            o = self._outcome
            if o is not None and o.awaiting == "approvals":
                try:
                    return self._run(Inputs(approvals=list(self._approvals)))
                finally:
                    if self._outcome.awaiting != "approvals":
                        self._approvals = []
            if o is not None and o.awaiting == "shares":
                return self._submit_shares()
            return self._run()

    # -- remote sealed hand-in (tui.services.ceremony_remote) ---------------------------
    def offer(self, ttl: int = 900) -> CeremonyView:
        """Make a transport offer for this ceremony's waiting share step (the runner seals
        its private half on the HSM) and show it.

        Raises:
            UsageError: not waiting for shares, or no token open. CeremonyError, and
            CeremonyExpired: from :meth:`ceremonies.runner.CeremonyRunner.offer`.
        """
        with self._lock:
            self._require("shares")
            self._offer = offer_view(self._need().offer(ttl=ttl))
            return self._view()

    def hand_in_sealed(self, blob: str) -> CeremonyView:
        """Hand one pasted sealed blob to the runner now (``Inputs.sealed``). The runner
        opens, checks and records it (held sealed on the HSM until the quorum); its share
        row and its SAS come back in the view. Shares typed here stay on screen until the
        quorum, as before, and go in with the last one.

        Raises:
            UsageError: not waiting for shares, or not a blob. ConfigError: unreadable file.
        """
        from ceremonies.runner import Inputs

        with self._lock:
            self._require("shares")
            text = read_sealed(blob)
            self._sealed_n += 1
            source = f"sealed-{self._sealed_n}"
            before = len(self._outcome.handins)
            counted = {c.custodian for _, c in self._handins if c.status == "ok"}
            sset = self._share_set()
            view = self._run(Inputs(sealed=[(source, text)]))
            check, sas = sealed_result(source, self._outcome.handins[before:])
            if check.status == "ok" and check.custodian in counted:  # typed here, not yet in
                check = replace(check, status="rejected", reason=DUPLICATE)
            if sas:
                self._sas.append((check.custodian or source, sas))
            self._handins.append((None, check))
            if view.awaiting == "shares" and sset is not None:
                pending = [si for si, _ in self._handins if si is not None]
                if pending and quorum_of(sset, [c for _, c in self._handins]).met:
                    return self._submit_shares()
            return self._view()

    def abort(self, reason: str) -> CeremonyView:
        with self._lock:
            r = self._need()
            with self._audit("ceremony abort", r.ceremony_id):
                self._outcome = r.abort(reason)
            return self._view()

    # -- cards ----------------------------------------------------------------------
    def _card(self, name: str) -> Any:
        from custody.shares.card import Card
        from custody.shares.envelope import load_envelope

        r = self._need()
        out = Path(r.params.get("out", ""))
        try:
            words = tuple((out / f"{name}.share.txt").read_text().split())
            env = load_envelope((out / f"{name}.envelope.json").read_bytes())
        except OSError as exc:
            raise ConfigError(
                f"No share card for {name} in this ceremony",
                "Cards exist after the issue-shares step.",
            ) from exc
        except ShareError:
            raise
        return Card(
            name=name,
            label=f"custody {r.state.kind} {r.ceremony_id[:8]}",
            words=words,
            envelope=env,
        )

    def card(self, name: str) -> CardView:
        with self._lock:
            return card_view(self._card(name))

    def export_card(self, name: str, path: str) -> Path:
        with self._lock:
            return export_card(self._card(name), path)

    # -- view -------------------------------------------------------------------------
    def _view(self) -> CeremonyView:
        r, o = self._need(), self._outcome
        st = r.state
        status = o.status if o is not None else st.status
        awaiting = o.awaiting if o is not None and o.status == "awaiting-input" else None
        step = (o.step if awaiting else None) or st.in_flight
        if awaiting and self._round not in (None, step):
            self._handins, self._approvals = [], []
        if awaiting:
            self._round = step
        sset = None
        try:
            sset = (
                self._share_set()
                if awaiting == "shares" or (self._handins and status != "aborted")
                else None
            )
        except CustodyError:
            sset = None
        checks = tuple(c for _, c in self._handins)
        now = self.clock()
        req = o.request if o is not None else None
        approvals = tuple(
            ApprovalRow(
                approver=a.approver,
                issued_at=a.issued_at,
                expires_at=a.expires_at,
                status="valid" if a.expires_at >= now else "expired",
            )
            for a in self._approvals
        )
        cards: tuple[str, ...] = ()
        if "issue-shares" in st.done and status != "aborted":
            cards = tuple(st.facts.get("issued_to", ()))
        return CeremonyView(
            ceremony_id=r.ceremony_id,
            kind=st.kind,
            status=status,
            awaiting=awaiting,
            step=step,
            steps=step_rows(st.kind, st.done, step, status, awaiting),
            quorum=quorum_of(sset, checks) if sset is not None else None,
            shares=checks,
            approvals=approvals,
            request=req,
            approvals_needed=int(req.get("needed", 0)) if req else 0,
            facts=public_facts(dict(st.facts)),
            messages=tuple(o.messages) if o is not None else (),
            alerts=tuple(h.refusal for h in (o.handins if o else ()) if h.refusal),
            bundle=str(r.bundle),
            cards=cards,
            expires_at=st.expires_at,
            offer=self._offer if awaiting == "shares" else None,
            sas=tuple(self._sas),
        )

    def _signer_for(self, signer: Any) -> Any:
        """Keep the ceremony's signer so a token-held key's session is closed with us."""
        self._close_signer()
        self._signer = signer
        return signer

    def _close_signer(self) -> None:
        signer, self._signer = self._signer, None
        close = getattr(signer, "close", None)
        if callable(close):
            close()  # a TokenSigner holds the participant's token session

    def close(self) -> None:
        with self._lock:
            self._close_signer()
            if self._runner is not None:
                self._runner.close_handles()
            if self._dep is not None:
                self._dep.close()
            self._dep = self._runner = self._outcome = None
            self._handins, self._approvals, self._round = [], [], None
            self._offer, self._sas, self._sealed_n = None, [], 0


def ceremony_services(app: Any) -> CeremonyServices:
    """The app's ceremony services, created on first use (tests may preset
    ``app.ceremony_services``). The PIN comes from the app's session PIN."""
    svc = getattr(app, "ceremony_services", None)
    if svc is None:
        # Services.pin: --pin-file, CUSTODY_PIN or the PIN modal; read per ceremony opened
        svc = HomeCeremonyServices(app.settings.home, app.services.pin)
        app.ceremony_services = svc
    return svc


__all__ = [
    "INPUT_ASKS",
    "STEP_INFO",
    "ApprovalRow",
    "CardView",
    "CeremonyServices",
    "CeremonyView",
    "GroupProgress",
    "HomeCeremonyServices",
    "OfferView",
    "QuorumView",
    "ShareCheck",
    "ShareSet",
    "StepRow",
    "WordState",
    "card_view",
    "ceremony_services",
    "check_share",
    "check_words",
    "complete_word",
    "export_card",
    "public_facts",
    "quorum_of",
    "read_envelope",
    "step_rows",
]
