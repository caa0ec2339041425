"""The ceremony screens' view models and the pure helpers that build them.

Owns what the screens show (:class:`CeremonyView`, its steps, approvals and cards), the
public facts worth showing, the start form's parameters (same rules as ``custody
ceremony``), envelope text as pasted, and card rendering and export. Everything here is
public data; share words appear only in :class:`CardView` (``repr=False``), which is shown
to its custodian alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ceremonies.sharecheck import LiveCheck, QuorumView
from custody.errors import ConfigError, UsageError
from custody.privatefile import write_private
from tui.services.ceremony_remote import OfferView, half_blocks

ShareCheck = LiveCheck
"""The screen's row of one share: the session's live check (:mod:`ceremonies.sharecheck`)."""

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
    alerts: tuple[str, ...] = ()  # the messages that report a share refused (from HandIn)
    bundle: str = ""
    cards: tuple[str, ...] = ()  # custodians whose card can be shown (generate/reshare)
    expires_at: int = 0
    offer: OfferView | None = None  # a transport offer for remote hand-ins (public)
    sas: tuple[tuple[str, str], ...] = ()  # (custodian, SAS) of each opened remote hand-in

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


def step_rows(
    kind: str, done: Sequence[str], current: str | None, status: str, awaiting: str | None
) -> tuple[StepRow, ...]:
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
    out: list[tuple[str, str]] = []
    for k in sorted(facts):
        v = facts[k]
        if k in ("holders", "dealer_public", "new_rk_public"):
            continue
        if isinstance(v, dict):  # one line per field, never raw JSON
            out.extend((f"{k}.{sk}", _readable(sv)) for sk, sv in sorted(v.items()))
        else:
            out.append((k, _readable(v)))
    return tuple(out)


def _readable(v: Any) -> str:
    """A fact value as a person reads it: lists joined, mappings as ``key=value``."""
    if isinstance(v, dict):
        return ", ".join(f"{k}={_readable(x)}" for k, x in sorted(v.items()))
    if isinstance(v, list | tuple):
        parts = [_readable(x) for x in v]
        return ("; " if any(isinstance(x, dict) for x in v) else ", ").join(parts)
    if isinstance(v, bool):
        return "yes" if v else "no"
    return "-" if v is None else str(v)


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
        raise ConfigError(
            f"Cannot read the envelope file {p.name}",
            "Paste the envelope text (from the QR code) or give the path of NAME.envelope.json.",
        ) from exc


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
            raise UsageError(
                f"Cannot read the scheme {scheme!r}",
                "Write T (for T of N), or groups as 2/2,2/2,2/2:2.",
            ) from None
        if sum(n for _, n in groups) != len(cust):
            raise UsageError(
                "The scheme needs one custodian per share",
                f"Name {sum(n for _, n in groups)} custodians.",
            )
        if any(not 1 <= t <= n for t, n in groups) or (
            len(groups) == 1 and groups[0][0] == 1 and len(cust) > 1
        ):
            raise UsageError(
                "Each group needs 1 <= T <= N, and 1-of-N is not allowed",
                "For example: 3 (3 of 5).",
            )
        return {
            "custodians": cust,
            "out": str(Path(p["out"]).expanduser().resolve()),
            "groups": groups,
            "group_threshold": gthr,
        }
    if kind == "emergency-rotate":
        if not str(p.get("reason", "")).strip():
            raise UsageError(
                "Give the reason for the emergency rotation", "It goes into the incident record."
            )
        return {"reason": str(p["reason"]).strip()}
    return {}


def card_view(card: Any) -> CardView:
    """The card's view; its QR (the envelope, level Q as printed) in half blocks for the
    screen's black-on-white style (:func:`tui.services.ceremony_remote.half_blocks`)."""
    from custody.shares.card import make_qr

    return CardView(
        name=card.name,
        words=tuple(card.words),
        lines=tuple(card.lines()),
        qr=half_blocks([list(r) for r in make_qr(card.envelope_bytes).get_matrix()]),
    )


def export_card(card: Any, path: str) -> Path:
    """Write *card* as PNG, SVG or PDF (by the file's suffix), mode 0600.

    Raises:
        UsageError: another suffix. StorageError: the file cannot be written, or the name is
            a symbolic link (nothing is written).
    """
    from custody.shares.card import render

    p = Path(path).expanduser()
    fmt = p.suffix.lower().lstrip(".")
    if fmt not in ("png", "svg", "pdf"):
        raise UsageError(
            "Export the card as .png, .svg or .pdf", "End the file name with one of these."
        )
    data = render(card, fmt)
    return write_private(p, data)
