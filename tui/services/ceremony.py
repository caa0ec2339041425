"""Ceremony services for the TUI: thread pinning and view models over a ceremony session.

The ceremony screens never open the store, the token or a file. They call a
:class:`CeremonyServices` object from thread workers and get back frozen view models
(:class:`CeremonyView`, :class:`ShareCheck`, :class:`CardView`). The real implementation,
:class:`HomeCeremonyServices`, pins one headless
:class:`ceremonies.session.CeremonySession` to one thread and turns its public
:class:`~ceremonies.session.SessionState` into the screen's :class:`CeremonyView`; the
session does the work (opening the home through the one door, driving the runner, checking
shares with the one share checker, collecting approvals, offers and sealed hand-ins), just
as ``custody ceremony``'s interactive hand-in does. The snapshot tests inject
:class:`tui.fakes.StaticCeremonyServices` with fixed data.

What stays here is the TUI's own part: loading a key from a path and passphrase typed in a
form, reading envelope text or files and approval files as pasted, the start form's
parameters, and the view models.

Secrets: share words pass through to the session (held there in ``repr=False`` inputs until
the runner takes them); passphrases and PINs are arguments, never attributes.
"""

from __future__ import annotations

import json
import shlex
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from ceremonies.participants import load_signer
from ceremonies.session import CeremonySession, SessionState
from ceremonies.sharecheck import (
    GroupProgress,
    QuorumView,
    ShareSet,
    WordState,
    check_words,
    complete_word,
    quorum_of,
)
from ceremonies.sharecheck import check_typed as check_share
from ceremonies.transcript.records import Approval
from custody.errors import CeremonyError, ConfigError, TranscriptError
from custody.shares.transport import SAS_WORDS
from tui.services.ceremony_remote import BLOB_PREFIX, OfferView, offer_view, read_sealed
from tui.services.ceremony_views import (
    INPUT_ASKS,
    STEP_INFO,
    ApprovalRow,
    CardView,
    CeremonyView,
    ShareCheck,
    StepRow,
    _params,
    card_view,
    export_card,
    public_facts,
    read_envelope,
    step_rows,
)

PIN_HINT = "Press p on the dashboard to enter it, or start custody tui with --pin-file."
NO_CEREMONY = ("No ceremony is open on this screen", "Start one with n, or resume one with o.")


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
    def confirm_sas(self, custodian: str, words: str) -> CeremonyView: ...
    def card(self, name: str) -> CardView: ...
    def export_card(self, name: str, path: str) -> Path: ...
    def close(self) -> None: ...


class HomeCeremonyServices:
    """The ceremony screens' services on a real home: one :class:`CeremonySession`, pinned
    to one thread.

    SQLite connections and the PKCS#11 session belong to the thread that opened them, so
    every call runs on this one thread (the UI's workers just wait on it), under
    :attr:`_lock`. The token PIN comes from ``pin()`` (the app's session PIN); the session
    passes it straight to the door and never keeps it.
    """

    def __init__(
        self,
        home: Path,
        pin: Callable[[], str | None],
        clock: Callable[[], int] = lambda: int(time.time()),
    ) -> None:
        self.home = Path(home)
        self.clock = clock
        self._pin = pin  # the app's accessor, read by the session when a ceremony opens
        self._lock = threading.RLock()
        self.session = CeremonySession(
            self.home, pin, clock=clock, via="tui", pin_hint=PIN_HINT, no_ceremony=NO_CEREMONY
        )
        self._offer: tuple[Any, OfferView] | None = None  # (the session's offer, its view)
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
            "confirm_sas",
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
                with self._lock:
                    return fn(*args)
            return self._thread.submit(call, *args).result()

        call.__name__ = fn.__name__
        call.__doc__ = fn.__doc__
        return call

    def __repr__(self) -> str:
        return f"HomeCeremonyServices(home={str(self.home)!r}, open={self.session.is_open})"

    # -- the session, in the screen's terms ------------------------------------------------
    def open_ceremonies(self) -> list[dict[str, Any]]:
        return self.session.open_ceremonies()

    def start(
        self, kind: str, key_path: str, passphrase: str, params: dict[str, Any]
    ) -> CeremonyView:
        """Open a new ceremony of *kind* (as ``custody ceremony KIND``) and run it until it
        needs people.

        Raises:
            UsageError: bad parameters or no PIN. PolicyError: the key is not a super-admin's.
            CeremonyError: another ceremony is open. Anything the runner raises.
        """
        signer = load_signer(Path(key_path).expanduser(), passphrase)
        try:
            runner_params = _params(kind, params)
            if kind in ("generate", "reshare"):
                runner_params.update(self._delivery(runner_params["custodians"], params))
        except BaseException:
            _close(signer)
            raise
        return self._view(self.session.start(kind, signer, runner_params))

    def _delivery(self, custodians: list[str], params: dict[str, Any]) -> dict[str, Any]:
        """Sealed issue to each custodian's endorsed X25519 key (the form's "seal to":
        their NAME.pub.json files or a directory of them, as ``--seal-to``), or plain
        shares only when the form's switch asks for them; checked against the roster
        before the ceremony opens (:func:`ceremonies.delivery.delivery_params`).

        Raises:
            UsageError: neither or both; a custodian without an identity, an identity that
                is not the enrolled key, or one without an encryption key.
            ConfigError, IntegrityError: an unreadable or forged identity file.
        """
        from ceremonies.delivery import delivery_params
        from custody.deployment import open_deployment

        seal = shlex.split(str(params.get("seal_to") or ""))
        with open_deployment(self.home) as dep:
            return delivery_params(
                dep.store,
                custodians,
                seal,
                plain=bool(params.get("plain_shares")),
                words=("the 'seal to' field", "'plain shares'"),
            )

    def resume(self, ceremony_id: str, key_path: str, passphrase: str) -> CeremonyView:
        signer = load_signer(Path(key_path).expanduser(), passphrase)
        return self._view(self.session.resume(ceremony_id, signer))

    def view(self) -> CeremonyView | None:
        st = self.session.state()
        return self._view(st) if st is not None else None

    def check(self, source: str, text: str, envelope: str) -> ShareCheck:
        """Check a share as typed, without handing it in."""
        env = read_envelope(envelope) if envelope.strip() else None
        return self.session.check(source, text, env)

    def hand_in(self, source: str, text: str, envelope: str) -> CeremonyView:
        """Hand in one share (see :meth:`CeremonySession.hand_in`).

        Raises:
            UsageError: the ceremony is not waiting for shares, or the share is incomplete.
        """
        self.session.require("shares")
        return self._view(self.session.hand_in(source, text, read_envelope(envelope)))

    def add_approval_file(self, path: str) -> CeremonyView:
        self.session.require("approvals")
        try:
            a = Approval.from_json(json.loads(Path(path).expanduser().read_text()))
        except (OSError, ValueError, TranscriptError) as exc:
            raise ConfigError(
                f"{Path(path).name} is not an approval file",
                "Use a file written by 'custody ceremony approve'.",
            ) from exc
        return self._view(self.session.add_approval(a))

    def sign_approval(self, key_path: str, passphrase: str) -> CeremonyView:
        """A participant signs the current approval request with their own key here."""
        o = self.session.require("approvals")
        if not o.request:
            raise CeremonyError(
                "There is no approval request to sign",
                "Resume the ceremony so that it states its request.",
            )
        signer = load_signer(Path(key_path).expanduser(), passphrase)
        return self._view(self.session.sign_approval(signer))

    def submit(self) -> CeremonyView:
        """Hand what was collected to the runner now (shares or approvals)."""
        return self._view(self.session.submit())

    def offer(self, ttl: int = 900) -> CeremonyView:
        """Make a transport offer for this ceremony's waiting share step and show it."""
        return self._view(self.session.offer(ttl))

    def hand_in_sealed(self, blob: str) -> CeremonyView:
        """Hand one pasted sealed blob (or the file holding it) to the runner now.

        While a remote hand-in waits for its SAS (SAS before use), the same field takes
        the 4 words the custodian reads out (``NAME=WORDS`` when several wait): they go
        to :meth:`confirm_sas`.

        Raises:
            UsageError: not waiting for shares, or not a blob. ConfigError: unreadable file.
        """
        self.session.require("shares")
        t = blob.strip()
        if not t.startswith(BLOB_PREFIX) and self.session.sas_waiting():
            who, sep, words = t.partition("=")
            if not sep:
                who, words = "", t
            if len(words.split()) == SAS_WORDS:  # the SAS the custodian reads out
                return self.confirm_sas(who.strip(), words)
        return self._view(self.session.hand_in_sealed(read_sealed(blob)))

    def confirm_sas(self, custodian: str, words: str) -> CeremonyView:
        """SAS before use: count *custodian*'s remote hand-in once the coordinator types
        the words the custodian reads out; words that differ reject it (recorded).

        Raises:
            UsageError: not waiting for shares, or no remote hand-in of *custodian* waits.
        """
        return self._view(self.session.confirm_sas(custodian, words))

    def abort(self, reason: str) -> CeremonyView:
        return self._view(self.session.abort(reason))

    def card(self, name: str) -> CardView:
        return card_view(self.session.card(name))

    def export_card(self, name: str, path: str) -> Path:
        return export_card(self.session.card(name), path)

    def close(self) -> None:
        self.session.close()
        self._offer = None

    # -- view model -------------------------------------------------------------------------
    def _offer_view(self, offer: Any) -> OfferView | None:
        if offer is None:
            return None
        if self._offer is None or self._offer[0] is not offer:
            self._offer = (offer, offer_view(dict(offer)))
        return self._offer[1]

    def _view(self, st: SessionState) -> CeremonyView:
        req = dict(st.request) if st.request is not None else None
        return CeremonyView(
            ceremony_id=st.ceremony_id,
            kind=st.kind,
            status=st.status,
            awaiting=st.awaiting,
            step=st.step,
            steps=step_rows(st.kind, st.done, st.step, st.status, st.awaiting),
            quorum=st.quorum,
            shares=st.checks,
            approvals=tuple(
                ApprovalRow(
                    approver=a.approver,
                    issued_at=a.issued_at,
                    expires_at=a.expires_at,
                    status="valid" if a.expires_at >= st.now else "expired",
                )
                for a in st.approvals
            ),
            request=req,
            approvals_needed=st.approvals_needed,
            facts=public_facts(dict(st.facts)),
            messages=st.messages,
            alerts=st.refusals,
            bundle=st.bundle,
            cards=st.cards,
            expires_at=st.expires_at,
            offer=self._offer_view(st.offer),
            sas=st.sas,
        )


def _close(signer: Any) -> None:
    close = getattr(signer, "close", None)
    if callable(close):
        close()


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
