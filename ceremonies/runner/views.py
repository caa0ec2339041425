"""Public, secret-free views the runner hands to its callers (the CLI and the TUI).

* :class:`ApprovalRequest`: what a quorum-gated step asks approvers to sign
  (:meth:`ceremonies.runner.CeremonyRunner.pending_request`);
* :class:`ShareCheck`: the result of checking one share against the share set the
  waiting step collects (:meth:`ceremonies.runner.CeremonyRunner.check_share`);
* :class:`HandIn`: the fate of one share handed in to a run (``Outcome.handins``), from
  which the run's hand-in messages are derived.

None ever holds share words, keys or the recovery key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

REQUEST_TYPE = "custody-approval-request"


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalRequest:
    """The approval request of a quorum-gated step (all public).

    ``action_digest`` is what each approval signs (with ``ceremony_id``, ``action`` and
    ``action_id``); ``window`` is the longest approval lifetime in seconds; ``eligible``
    are the roster members (in ``role``, with a key valid now) who may approve;
    ``recorded`` are the approvers the transcript already holds for this very action
    (recorded before an interruption): when they reach ``needed`` the step goes on
    without new approvals.
    """

    ceremony_id: str
    step: str
    action: str
    action_id: str
    params: Mapping[str, Any] = field(default_factory=dict)
    action_digest: str
    role: str
    needed: int
    window: int
    eligible: tuple[str, ...] = ()
    recorded: tuple[str, ...] = ()

    @property
    def met(self) -> bool:
        """Whether the approvals already recorded meet the quorum."""
        return len(self.recorded) >= self.needed

    def to_json(self) -> dict[str, Any]:
        """The request file ``custody ceremony approve`` reads (``--request-out``)."""
        return {
            "type": REQUEST_TYPE,
            "ceremony_id": self.ceremony_id,
            "step": self.step,
            "action": self.action,
            "action_id": self.action_id,
            "params": dict(self.params),
            "action_digest": self.action_digest,
            "role": self.role,
            "needed": self.needed,
            "window": self.window,
            "eligible": list(self.eligible),
            "recorded": list(self.recorded),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ShareCheck:
    """One share checked against the share set its step collects (no secret in it).

    ``custodian`` is the roster name the envelope names (the hand-in's source when the
    envelope cannot be read); ``reason`` is ``None`` when ``ok``, else a short machine
    reason (``commitment-mismatch``, ``wrong-epoch``, ``wrong-ceremony``,
    ``wrong-custodian``, ``duplicate-custodian``, ...) with ``detail`` the error's title.
    """

    custodian: str
    ok: bool
    reason: str | None = None
    detail: str = ""
    group: int | None = None
    member: int | None = None
    epoch: int | None = None


HandInStatus = Literal["accepted", "rejected", "duplicate", "held", "unconfirmed"]
HAND_IN_STATUSES: tuple[str, ...] = get_args(HandInStatus)


@dataclass(frozen=True, slots=True, kw_only=True)
class HandIn:
    """What the runner decided about one share handed in to a run (no secret in it).

    ``status``:

    * ``accepted``: verified and counted in this run's quorum;
    * ``held``: verified and accepted, but short of the quorum: sealed on the HSM until a
      later run brings the rest (:mod:`ceremonies.runner.held`);
    * ``unconfirmed``: a remote hand-in that opened and passed the check, held sealed on the
      HSM and NOT counted until the coordinator confirms its short authentication string
      (``reason`` ``sas-unconfirmed``; words that differ reject it as ``sas-mismatch``);
    * ``duplicate``: its custodian already handed in a share (``reason``
      ``duplicate-custodian``);
    * ``rejected``: refused; ``reason`` is the short machine reason (as in
      :class:`ShareCheck`, plus the transport's for a sealed hand-in that did not open:
      ``wrong-offer``, ``wrong-session``, ``expired``, ...), ``detail`` the error's title.

    ``source`` is the file name the share came from, or for a remote hand-in
    (``remote``) the name of the sealed blob; ``sas`` is the short authentication string
    of a remote hand-in that opened (public comparison words, read aloud by both sides),
    None otherwise. ``custodian`` is the roster name as far as known (None when the
    envelope could not be read, or the blob did not open); ``group`` and ``member``
    (1-based) are set for a counted share.
    """

    source: str
    custodian: str | None = None
    status: HandInStatus
    reason: str | None = None
    detail: str = ""
    sas: str | None = None
    group: int | None = None
    member: int | None = None
    remote: bool = False

    def __post_init__(self) -> None:
        if self.status not in HAND_IN_STATUSES:
            raise ValueError(f"unknown hand-in status {self.status!r}")
        if self.counted != (self.reason is None):
            raise ValueError("a reason is given exactly when the share is not counted")
        if self.status == "duplicate" and self.reason != "duplicate-custodian":
            raise ValueError("a duplicate hand-in has reason 'duplicate-custodian'")
        if self.sas is not None and not self.remote:
            raise ValueError("only a remote hand-in has a short authentication string")

    @property
    def counted(self) -> bool:
        """Whether the share counts towards the quorum (``accepted`` or ``held``)."""
        return self.status in ("accepted", "held")

    @property
    def label(self) -> str:
        """How the hand-in is named when its custodian is unknown (``remote:`` + the blob's
        name for a remote one), as the transcript's ``share.rejected`` names it."""
        return f"remote:{self.source}" if self.remote else self.source

    @property
    def refusal(self) -> str | None:
        """The line reporting a share that is not counted (None when it is)."""
        if self.counted or self.status == "unconfirmed":
            return None
        if self.remote and self.sas is None and self.custodian is None:  # it did not open
            return f"remote hand-in {self.source} rejected: {self.detail}"
        return f"share of {self.custodian or self.label} rejected: {self.detail}"

    def messages(self) -> tuple[str, ...]:
        """The human lines for ``Outcome.messages``: the SAS of a remote hand-in that
        opened, then the :attr:`refusal` of a share that is not counted."""
        out: list[str] = []
        if self.status == "unconfirmed":
            out.append(
                f"remote hand-in {self.source} of {self.custodian} is held, not counted, "
                "until its short authentication string is confirmed (ask the custodian to "
                "read out their words; --confirm-sas)"
            )
        if self.sas is not None and self.status != "rejected":
            out.append(
                f"remote hand-in {self.source} of {self.custodian}: short authentication "
                f"string {self.sas} confirmed"
            )
        if self.refusal is not None:
            out.append(self.refusal)
        return tuple(out)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "custodian": self.custodian,
            "status": self.status,
            "reason": self.reason,
            "detail": self.detail,
            "sas": self.sas,
            "group": self.group,
            "member": self.member,
            "remote": self.remote,
        }


__all__ = [
    "HAND_IN_STATUSES",
    "REQUEST_TYPE",
    "ApprovalRequest",
    "HandIn",
    "HandInStatus",
    "ShareCheck",
]
