"""Ceremony services for the TUI: one :class:`CeremonySession` drives the CLI's runner.

The ceremony screens never open the store, the token or a file. They call a
:class:`CeremonyServices` object from thread workers and get back frozen view models
(:class:`CeremonyView`, :class:`ShareCheck`, :class:`CardView`). The real implementation,
:class:`HomeCeremonyServices`, opens the deployment and drives
:class:`ceremonies.runner.CeremonyRunner` through its public API only (``start``,
``resume``, ``run``, ``abort``), exactly as ``custody ceremony`` does; the snapshot tests
inject :class:`StaticCeremonyServices` with fixed data.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from custody.errors import CeremonyError, ConfigError, CustodyError, ShareError, UsageError

# ----------------------------------------------------------------------------- steps
# step -> (who acts, what the step records in the transcript)
STEP_INFO: dict[str, tuple[str, str]] = {
    "review": ("coordinator", "the participants to add or revoke"),
    "enrol": ("super-admins", "approvals and the new roster"),
    "hsm-check": ("coordinator", "token label, serial, current root"),
    "generate-root": ("HSM", "new root version and its KCV"),
    "generate-rk": ("HSM", "the recovery key's KCV (never the key)"),
    "wrap-blob": ("HSM", "digest of the root-key blob"),
    "lock-root": ("HSM", "root marked non-extractable"),
    "split": ("coordinator", "scheme, holders, per-share commitments"),
    "issue-shares": ("coordinator", "who received a share and card"),
    "verify-shares": ("custodians", "verification round: who re-entered, RK KCV"),
    "finalise": ("coordinator", "the commit: new state active"),
    "collect-shares": ("custodians", "each share accepted or rejected, by name"),
    "rebuild-rk": ("coordinator", "the rebuilt recovery key's KCV"),
    "import-root": ("HSM", "root unwrapped into the token, KCV checked"),
    "verify-keks": ("HSM", "KEKs unwrap under the restored root"),
    "rewrap": ("HSM", "KEKs rewrapped under the new root"),
    "retire-epoch": ("coordinator", "old share set retired"),
    "approve": ("custodians", "signed approvals bound to the action digest"),
    "seal-blob": ("HSM", "root blob sealed to the share set"),
    "incident": ("coordinator", "incident, reason, notification list"),
    "disable-old": ("HSM", "compromised root versions disabled"),
    "revoke": ("coordinator", "grants and sessions revoked"),
    "report": ("coordinator", "impact report digest"),
    "scratch-token": ("HSM", "scratch token created, RK imported"),
    "compare-kcv": ("HSM", "KCV comparison"),
    "destroy-scratch": ("HSM", "scratch token destroyed"),
    "record": ("coordinator", "who passed the drill"),
}
INPUT_ASKS = {"collect-shares": "shares", "verify-shares": "shares", "approve": "approvals"}


@dataclass(frozen=True, slots=True, kw_only=True)
class StepRow:
    number: int
    name: str
    status: str  # done | running | waiting | next | pending | aborted
    actor: str
    records: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WordState:
    """One typed word: what was typed (secret), what it expands to, and its error."""

    position: int
    typed: str = field(repr=False)
    word: str | None = field(default=None, repr=False)
    error: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ShareCheck:
    """The live check of one share. ``status``: incomplete | ok | rejected."""

    source: str
    status: str
    reason: str = ""
    custodian: str = ""
    group: int | None = None  # 1-based
    member: int | None = None
    word_errors: tuple[tuple[int, str], ...] = ()  # (1-based position, error)

    def line(self) -> str:
        who = self.custodian or self.source
        where = f" (group {self.group}, member {self.member})" if self.group else ""
        if self.status == "ok":
            return f"{who}{where}: ok"
        return f"{who}{where}: {self.status}" + (f": {self.reason}" if self.reason else "")


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupProgress:
    label: str
    have: int
    need: int

    @property
    def met(self) -> bool:
        return self.have >= self.need


@dataclass(frozen=True, slots=True, kw_only=True)
class QuorumView:
    groups: tuple[GroupProgress, ...]
    group_threshold: int

    @property
    def groups_met(self) -> int:
        return sum(1 for g in self.groups if g.met)

    @property
    def met(self) -> bool:
        return self.groups_met >= self.group_threshold

    def describe(self) -> str:
        parts = [f"{g.label} {g.have}/{g.need}" for g in self.groups]
        if len(self.groups) > 1:
            parts.append(f"groups {self.groups_met}/{self.group_threshold}")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalRow:
    approver: str
    issued_at: int
    expires_at: int
    status: str  # valid | expired

    def seconds_left(self, now: int) -> int:
        return max(0, self.expires_at - now)


@dataclass(frozen=True, slots=True, kw_only=True)
class CeremonyView:
    """Everything the ceremony screen shows. Public data only."""

    ceremony_id: str
    kind: str
    status: str  # running | awaiting-input | closed | aborted
    awaiting: str | None
    step: str | None
    steps: tuple[StepRow, ...]
    quorum: QuorumView | None = None
    shares: tuple[ShareCheck, ...] = ()
    approvals: tuple[ApprovalRow, ...] = ()
    request: dict[str, Any] | None = None
    approvals_needed: int = 0
    facts: tuple[tuple[str, str], ...] = ()
    messages: tuple[str, ...] = ()
    bundle: str = ""
    cards: tuple[str, ...] = ()  # custodians whose card can be shown (generate/reshare)
    expires_at: int = 0

    @property
    def next_actor(self) -> str:
        for s in self.steps:
            if s.status in ("running", "waiting", "next"):
                return s.actor
        return "nobody: the ceremony is " + self.status


@dataclass(frozen=True, slots=True, kw_only=True)
class CardView:
    """A custodian's share card: shown to that custodian only."""

    name: str
    words: tuple[str, ...] = field(repr=False)
    lines: tuple[str, ...]
    qr: str  # the envelope's QR, rendered with half blocks (qr_terminal)


# ------------------------------------------------------------------------ live checks
def check_words(text: str) -> tuple[WordState, ...]:
    """Expand each typed word (a unique 4-letter prefix is enough, SLIP-0039) and flag
    unknown or too-short ones. The word being typed (no trailing space) is not flagged
    while it is still a prefix of some word."""
    from custody.shares.slip39 import ShareWordError, expand_words

    toks = text.split()
    out = []
    for i, tok in enumerate(toks, start=1):
        last_open = i == len(toks) and not text[-1:].isspace()
        try:
            word = expand_words(tok, label="share")[0]
            out.append(WordState(position=i, typed=tok, word=word))
        except ShareWordError as exc:
            if last_open and len(tok) < 4 and _is_prefix(tok):
                out.append(WordState(position=i, typed=tok))
                continue
            why = "too short" if len(tok) < 4 and _is_prefix(tok) else "unknown word"
            out.append(WordState(position=i, typed=tok, error=why if exc else why))
    return tuple(out)


def _is_prefix(tok: str) -> bool:
    from custody.shares.slip39 import WORDLIST

    t = tok.lower()
    return any(w.startswith(t) for w in WORDLIST)


def complete_word(tok: str) -> str | None:
    """The word a typed prefix stands for, once it is unique (else None)."""
    from custody.shares.slip39 import WORDLIST

    t = tok.lower()
    if len(t) < 2:
        return None
    hits = [w for w in WORDLIST if w.startswith(t)]
    return hits[0] if len(hits) == 1 else None


@dataclass(frozen=True, slots=True, kw_only=True)
class ShareSet:
    """The public facts a share is checked against (store or a ceremony's new set)."""

    epoch: int
    ceremony_id: str
    dealer: bytes
    scheme: dict[str, Any]
    holders: dict[tuple[int, int], dict[str, str]]
    retired: tuple[tuple[int, str, dict[tuple[int, int], str]], ...] = ()  # (epoch, cid, idx->commitment)


def check_share(source: str, text: str, envelope: bytes | None, sset: ShareSet | None) -> ShareCheck:
    """Check one share before it is counted. Never raises for a bad share.

    Order: words (unknown, at the word), length and RS1024 checksum (located at the word
    when one word is wrong), membership of the share set by commitment (wrong set or
    epoch), then the envelope (signature, ceremony, epoch, commitment, custodian).
    """
    from custody.shares import slip39
    from custody.shares.envelope import commitment, load_envelope, verify_share

    ws = check_words(text)
    bad = tuple((w.position, w.error) for w in ws if w.error)
    if bad:
        return ShareCheck(source=source, status="rejected", word_errors=bad,
                          reason="; ".join(f"word {p}: {e}" for p, e in bad))
    if len(ws) not in (20, 33) or (not text[-1:].isspace() and len(ws) < 20):
        return ShareCheck(source=source, status="incomplete",
                          reason=f"{len(ws)} of 20 (or 33) words")
    try:
        parsed = slip39.parse_share(" ".join(w.word or "" for w in ws), label=source)
    except slip39.ShareDiagnostic as exc:
        pos = getattr(exc, "position", None)
        why = "checksum fails" if isinstance(exc, slip39.ShareChecksumError) else exc.title
        errs = ((pos, "checksum fails here"),) if pos else ()
        return ShareCheck(source=source, status="rejected", word_errors=errs,
                          custodian=_named(envelope, sset),
                          reason=f"{why}" + (f" (word {pos} is wrong)" if pos else ""))
    g, m = parsed.group_index, parsed.member_index
    base = {"source": source, "group": g + 1, "member": m + 1}
    if sset is None:
        return ShareCheck(status="ok", **base)
    holder = sset.holders.get((g, m))
    mine = commitment(parsed, ceremony_id=sset.ceremony_id, epoch=sset.epoch).hex()
    if holder is None or holder["commitment"] != mine:
        for ep, cid, commits in sset.retired:
            if commits.get((g, m)) == commitment(parsed, ceremony_id=cid, epoch=ep).hex():
                return ShareCheck(status="rejected", reason=f"wrong epoch: from retired "
                                  f"epoch {ep}, the current one is {sset.epoch}", **base)
        return ShareCheck(status="rejected", reason="wrong set: not a share of the current "
                          f"share set (epoch {sset.epoch})", **base)
    name = holder["name"]
    if envelope is None:
        return ShareCheck(status="incomplete", custodian=name,
                          reason="matches the share set; now give its envelope (QR text)", **base)
    try:
        env = load_envelope(envelope)
        verify_share(parsed, env, sset.dealer, expected_ceremony=sset.ceremony_id,
                     expected_epoch=sset.epoch)
        if env.payload.custodian != holder["fingerprint"]:
            return ShareCheck(status="rejected", custodian=name,
                              reason="the envelope was issued to another custodian", **base)
    except ShareError as exc:
        return ShareCheck(status="rejected", custodian=name, reason=exc.title, **base)
    return ShareCheck(status="ok", custodian=name, **base)


def _named(envelope: bytes | None, sset: ShareSet | None) -> str:
    """The custodian an envelope names (by fingerprint in the share set), or ""."""
    from custody.shares.envelope import load_envelope

    if envelope is None or sset is None:
        return ""
    try:
        fp = load_envelope(envelope).payload.custodian
    except ShareError:
        return ""
    return next((h["name"] for h in sset.holders.values() if h["fingerprint"] == fp), "")


def quorum_of(sset: ShareSet, checks: Sequence[ShareCheck]) -> QuorumView:
    """Progress per group from the shares that passed, by distinct (group, member)."""
    groups = sset.scheme["groups"]
    have: dict[int, set[int]] = {}
    for c in checks:
        if c.status == "ok" and c.group is not None and c.member is not None:
            have.setdefault(c.group, set()).add(c.member)
    label = (lambda i: "Custodians") if len(groups) == 1 else (lambda i: f"Group {i}")
    return QuorumView(groups=tuple(GroupProgress(label=label(i), have=len(have.get(i, ())),
                                                 need=t)
                                   for i, (t, _n) in enumerate(groups, start=1)),
                      group_threshold=int(sset.scheme["group_threshold"]))


def step_rows(kind: str, done: Sequence[str], current: str | None, status: str,
              awaiting: str | None) -> tuple[StepRow, ...]:
    from ceremonies.engine import SCRIPTS

    rows = []
    nxt_seen = False
    for i, name in enumerate(SCRIPTS[kind], start=1):
        if name in done:
            st = "done"
        elif status == "aborted":
            st = "aborted"
        elif name == current and awaiting:
            st, nxt_seen = "waiting", True
        elif name == current:
            st, nxt_seen = "running", True
        elif not nxt_seen and status not in ("closed",):
            st, nxt_seen = "next", True
        else:
            st = "pending"
        actor, records = STEP_INFO.get(name, ("coordinator", ""))
        rows.append(StepRow(number=i, name=name, status=st, actor=actor, records=records))
    return tuple(rows)


def public_facts(facts: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The facts worth showing (all are public by construction; long lists shortened)."""
    out = []
    for k in sorted(facts):
        v = facts[k]
        if k in ("holders", "dealer_public", "new_rk_public"):
            continue
        if isinstance(v, list):
            v = ", ".join(str(x) for x in v)
        elif isinstance(v, dict):
            v = json.dumps(v, sort_keys=True)
        out.append((k, str(v)))
    return tuple(out)


# ------------------------------------------------------------------------- protocol
class CeremonyServices(Protocol):
    """What the ceremony screens need. Every method may raise a CustodyError."""

    def open_ceremonies(self) -> list[dict[str, Any]]: ...
    def start(self, kind: str, key_path: str, passphrase: str, params: dict[str, Any]) -> CeremonyView: ...
    def resume(self, ceremony_id: str, key_path: str, passphrase: str) -> CeremonyView: ...
    def view(self) -> CeremonyView | None: ...
    def check(self, source: str, text: str, envelope: str) -> ShareCheck: ...
    def hand_in(self, source: str, text: str, envelope: str) -> CeremonyView: ...
    def add_approval_file(self, path: str) -> CeremonyView: ...
    def sign_approval(self, key_path: str, passphrase: str) -> CeremonyView: ...
    def submit(self) -> CeremonyView: ...
    def abort(self, reason: str) -> CeremonyView: ...
    def card(self, name: str) -> CardView: ...
    def export_card(self, name: str, path: str) -> Path: ...
    def close(self) -> None: ...


def read_envelope(text: str) -> bytes | None:
    """Envelope text as pasted (JSON, e.g. from the QR) or a path to an envelope file."""
    t = text.strip()
    if not t:
        return None
    if t.startswith("{"):
        return t.encode()
    p = Path(t).expanduser()
    try:
        return p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"Cannot read the envelope file {p.name}",
                          "Paste the envelope text (from the QR code) or give the path of "
                          "NAME.envelope.json.") from exc


# ------------------------------------------------------------------ the real services
class HomeCeremonyServices:
    """Drives one ceremony at a time on a real home (store + token) through the runner.

    Not thread-safe by itself: every method takes :attr:`_lock`, so workers queue up. The
    token PIN comes from ``pin()`` (the app's session PIN); it is passed straight to
    ``Deployment.open`` and never kept here.
    """

    def __init__(self, home: Path, pin: Callable[[], str | None],
                 clock: Callable[[], int] = lambda: int(time.time())) -> None:
        self.home = Path(home)
        self._pin = pin
        self.clock = clock
        self._lock = threading.RLock()
        self._dep: Any = None
        self._runner: Any = None
        self._outcome: Any = None
        self._handins: list[tuple[Any, ShareCheck]] = []  # (ShareInput | None, check)
        self._approvals: list[Any] = []
        self._round: str | None = None
        # SQLite connections and the PKCS#11 session belong to the thread that opened
        # them: every call runs on this one thread (the UI's workers just wait on it).
        from concurrent.futures import ThreadPoolExecutor

        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ceremony")
        for name in ("open_ceremonies", "start", "resume", "view", "check", "hand_in",
                     "add_approval_file", "sign_approval", "submit", "abort", "card",
                     "export_card", "close"):
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
        from custody.deployment import Deployment

        self.close()
        pin = self._pin() if need_hsm else None
        if need_hsm and pin is None:
            raise UsageError("The token PIN is needed for this ceremony",
                             "Press p on the dashboard to enter it, or start custody tui "
                             "with --pin-file.")
        self._dep = Deployment.open(Home(self.home), pin)
        return self._dep

    def open_ceremonies(self) -> list[dict[str, Any]]:
        from ceremonies.runner import open_ceremonies
        from custody.config import Home
        from custody.deployment import Deployment

        with self._lock, Deployment.open(Home(self.home)) as dep:
            return open_ceremonies(dep)

    def start(self, kind: str, key_path: str, passphrase: str,
              params: dict[str, Any]) -> CeremonyView:
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
            signer = load_signer(Path(key_path).expanduser(), passphrase)
            dep = self._open(need_hsm=kind != "drill")
            thresholds = None
            if kind == "rotate-root":
                sset = active_share_set(dep.store)
                if sset is None:
                    raise CeremonyError("No share set", "Run the generate ceremony first.")
                thresholds = {"rotate-root": Threshold(role="custodian",
                                                       count=quorum_size(sset["scheme"]))}
            self._runner = CeremonyRunner.start(dep, kind, signer, params=_params(kind, params),
                                                thresholds=thresholds, clock=self.clock)
            return self._run()

    def resume(self, ceremony_id: str, key_path: str, passphrase: str) -> CeremonyView:
        from ceremonies.participants import load_signer
        from ceremonies.runner import CeremonyRunner

        with self._lock:
            signer = load_signer(Path(key_path).expanduser(), passphrase)
            dep = self._open(need_hsm=True)
            self._runner = CeremonyRunner.resume(dep, ceremony_id, signer, clock=self.clock)
            return self._run()

    # -- running ----------------------------------------------------------------------
    def _run(self, inputs: Any = None) -> CeremonyView:
        from ceremonies.runner import Inputs

        r = self._need()
        self._outcome = r.run(inputs if inputs is not None else Inputs())
        return self._view()

    def _need(self) -> Any:
        if self._runner is None:
            raise UsageError("No ceremony is open on this screen",
                             "Start one with n, or resume one with o.")
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
            return ShareSet(epoch=f["epoch"], ceremony_id=r.ceremony_id,
                            dealer=bytes.fromhex(f["dealer_public"]), scheme=f["scheme"],
                            holders={(h["group"] - 1, h["member"] - 1): {
                                "name": h["custodian"], "fingerprint": h["custodian_fingerprint"],
                                "commitment": h["commitment"]} for h in f["holders"]})
        s = active_share_set(r.dep.store)
        if s is None:
            return None
        retired = []
        for ep, cid in r.dep.store.query(
                "SELECT epoch, ceremony_id FROM share_sets WHERE state!='active'"):
            rows = r.dep.store.query("SELECT group_index, member_index, commitment FROM "
                                     "share_holders WHERE epoch=?", (ep,))
            retired.append((ep, cid, {(g, m): c for g, m, c in rows}))
        return ShareSet(epoch=s["epoch"], ceremony_id=s["ceremony_id"], dealer=s["dealer"],
                        scheme=s["scheme"], holders=s["holders"], retired=tuple(retired))

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
                raise UsageError(f"The share of {c.custodian or source} is incomplete: "
                                 f"{c.reason}", "Type all its words and give its envelope.")
            if c.status == "ok" and any(x.custodian == c.custodian and x.status == "ok"
                                        for _, x in self._handins):
                c = replace(c, status="rejected", reason="this custodian already handed in "
                            "a share")
            words = check_words(text)
            full = " ".join(w.word or w.typed for w in words)
            si = ShareInput(source=c.custodian or source, text=full, envelope=env) \
                if env is not None and c.reason != "this custodian already handed in a share" \
                else None
            self._handins.append((si, c))
            if sset is not None and quorum_of(sset, [x for _, x in self._handins]).met:
                return self._submit_shares()
            return self._view()

    def _require(self, what: str) -> None:
        o = self._outcome
        if o is None or o.status != "awaiting-input" or o.awaiting != what:
            raise UsageError(f"The ceremony is not waiting for {what}",
                             "See the step list for what it needs now.")

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
                raise ConfigError(f"{Path(path).name} is not an approval file",
                                  "Use a file written by 'custody ceremony approve'.") from exc
            return self._add_approval(a)

    def sign_approval(self, key_path: str, passphrase: str) -> CeremonyView:
        """A participant signs the current approval request with their own key here."""
        from ceremonies.participants import load_signer
        from ceremonies.transcript.records import Approval

        with self._lock:
            self._require("approvals")
            req = self._outcome.request
            if not req:
                raise CeremonyError("There is no approval request to sign",
                                    "Resume the ceremony so that it states its request.")
            signer = load_signer(Path(key_path).expanduser(), passphrase)
            a = Approval.create(signer, ceremony_id=req["ceremony_id"], action=req["action"],
                                action_id=req["action_id"], digest=req["action_digest"],
                                now=self.clock(), window=int(req.get("window", 600)))
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

    def abort(self, reason: str) -> CeremonyView:
        with self._lock:
            self._outcome = self._need().abort(reason)
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
            raise ConfigError(f"No share card for {name} in this ceremony",
                              "Cards exist after the issue-shares step.") from exc
        except ShareError:
            raise
        return Card(name=name, label=f"custody {r.state.kind} {r.ceremony_id[:8]}",
                    words=words, envelope=env)

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
            sset = self._share_set() if awaiting == "shares" or (
                self._handins and status != "aborted") else None
        except CustodyError:
            sset = None
        checks = tuple(c for _, c in self._handins)
        now = self.clock()
        req = o.request if o is not None else None
        approvals = tuple(ApprovalRow(approver=a.approver, issued_at=a.issued_at,
                                      expires_at=a.expires_at,
                                      status="valid" if a.expires_at >= now else "expired")
                          for a in self._approvals)
        cards: tuple[str, ...] = ()
        if "issue-shares" in st.done and status != "aborted":
            cards = tuple(st.facts.get("issued_to", ()))
        return CeremonyView(
            ceremony_id=r.ceremony_id, kind=st.kind, status=status, awaiting=awaiting,
            step=step, steps=step_rows(st.kind, st.done, step, status, awaiting),
            quorum=quorum_of(sset, checks) if sset is not None else None, shares=checks,
            approvals=approvals, request=req,
            approvals_needed=int(req.get("needed", 0)) if req else 0,
            facts=public_facts(dict(st.facts)),
            messages=tuple(o.messages) if o is not None else (), bundle=str(r.bundle),
            cards=cards, expires_at=st.expires_at)

    def close(self) -> None:
        with self._lock:
            if self._runner is not None:
                self._runner.close_handles()
            if self._dep is not None:
                self._dep.close()
            self._dep = self._runner = self._outcome = None
            self._handins, self._approvals, self._round = [], [], None


def _params(kind: str, p: dict[str, Any]) -> dict[str, Any]:
    """The runner's params from the start form (same rules as ``custody ceremony``).

    Raises:
        UsageError: a bad scheme or a missing field.
    """
    if kind in ("generate", "reshare"):
        cust = [c.strip() for c in str(p.get("custodians", "")).replace(",", " ").split()]
        if not cust:
            raise UsageError("Name the custodians", "For example: alice bob carol dave erin.")
        if not p.get("out"):
            raise UsageError("Give the directory for the share files", "For example: ./shares")
        scheme = str(p.get("scheme", "")).strip()
        try:
            if "/" in scheme.split(" of ")[0] or ":" in scheme:
                gpart, _, gt = scheme.partition(":")
                groups = [[int(t), int(n)] for t, n in (g.split("/") for g in gpart.split(","))]
                gthr = int(gt or 1)
            else:
                t = int(scheme.split("of")[0])
                groups, gthr = [[t, len(cust)]], 1
        except ValueError:
            raise UsageError(f"Cannot read the scheme {scheme!r}",
                             "Write T (for T of N), or groups as 2/2,2/2,2/2:2.") from None
        if sum(n for _, n in groups) != len(cust):
            raise UsageError("The scheme needs one custodian per share",
                             f"Name {sum(n for _, n in groups)} custodians.")
        if any(not 1 <= t <= n for t, n in groups) or (len(groups) == 1 and groups[0][0] == 1
                                                        and len(cust) > 1):
            raise UsageError("Each group needs 1 <= T <= N, and 1-of-N is not allowed",
                             "For example: 3 (3 of 5).")
        return {"custodians": cust, "out": str(Path(p["out"]).expanduser().resolve()),
                "groups": groups, "group_threshold": gthr}
    if kind == "emergency-rotate":
        if not str(p.get("reason", "")).strip():
            raise UsageError("Give the reason for the emergency rotation",
                             "It goes into the incident record.")
        return {"reason": str(p["reason"]).strip()}
    return {}


def card_view(card: Any) -> CardView:
    from custody.shares.card import qr_terminal

    return CardView(name=card.name, words=tuple(card.words), lines=tuple(card.lines()),
                    qr=qr_terminal(card.envelope_bytes))


def export_card(card: Any, path: str) -> Path:
    """Write *card* as PNG, SVG or PDF (by the file's suffix), mode 0600.

    Raises:
        UsageError: another suffix. ConfigError: the file cannot be written.
    """
    import os

    from custody.shares.card import render

    p = Path(path).expanduser()
    fmt = p.suffix.lower().lstrip(".")
    if fmt not in ("png", "svg", "pdf"):
        raise UsageError("Export the card as .png, .svg or .pdf",
                         "End the file name with one of these.")
    data = render(card, fmt)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    except OSError as exc:
        raise ConfigError(f"Cannot write {p.name}", "Check the directory exists and is "
                          "writable.") from exc
    return p


# -------------------------------------------------------------------- fixed data
@dataclass
class StaticCeremonyServices:
    """Fixed views for snapshot tests and screenshots. No disk, no token."""

    current: CeremonyView | None = None
    cards: dict[str, Any] = field(default_factory=dict)  # name -> custody.shares.card.Card
    sset: ShareSet | None = None
    calls: list[str] = field(default_factory=list)

    def open_ceremonies(self) -> list[dict[str, Any]]:
        return []

    def start(self, kind: str, key_path: str, passphrase: str, params: dict[str, Any]) -> CeremonyView:
        self.calls.append(f"start {kind}")
        assert self.current is not None
        return self.current

    def resume(self, ceremony_id: str, key_path: str, passphrase: str) -> CeremonyView:
        assert self.current is not None
        return self.current

    def view(self) -> CeremonyView | None:
        return self.current

    def check(self, source: str, text: str, envelope: str) -> ShareCheck:
        return check_share(source, text, read_envelope(envelope) if envelope.strip() else None,
                           self.sset)

    def hand_in(self, source: str, text: str, envelope: str) -> CeremonyView:
        assert self.current is not None
        return self.current

    def add_approval_file(self, path: str) -> CeremonyView:
        assert self.current is not None
        return self.current

    def sign_approval(self, key_path: str, passphrase: str) -> CeremonyView:
        assert self.current is not None
        return self.current

    def submit(self) -> CeremonyView:
        assert self.current is not None
        return self.current

    def abort(self, reason: str) -> CeremonyView:
        assert self.current is not None
        return self.current

    def card(self, name: str) -> CardView:
        return card_view(self.cards[name])

    def export_card(self, name: str, path: str) -> Path:
        return export_card(self.cards[name], path)

    def close(self) -> None:
        pass


def ceremony_services(app: Any) -> CeremonyServices:
    """The app's ceremony services, created on first use (tests may preset
    ``app.ceremony_services``). The PIN comes from the app's session PIN."""
    svc = getattr(app, "ceremony_services", None)
    if svc is None:
        # Services.pin: --pin-file, CUSTODY_PIN or the PIN modal; read per ceremony opened
        svc = HomeCeremonyServices(app.settings.home, app.services.pin)
        app.ceremony_services = svc
    return svc
