"""Public, secret-free views the runner hands to its callers (the CLI and the TUI).

* :class:`ApprovalRequest`: what a quorum-gated step asks approvers to sign
  (:meth:`ceremonies.runner.CeremonyRunner.pending_request`);
* :class:`ShareCheck`: the result of checking one share against the share set the
  waiting step collects (:meth:`ceremonies.runner.CeremonyRunner.check_share`).

Neither ever holds share words, keys or the recovery key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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
        return {"type": REQUEST_TYPE, "ceremony_id": self.ceremony_id, "step": self.step,
                "action": self.action, "action_id": self.action_id,
                "params": dict(self.params), "action_digest": self.action_digest,
                "role": self.role, "needed": self.needed, "window": self.window,
                "eligible": list(self.eligible), "recorded": list(self.recorded)}


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


__all__ = ["REQUEST_TYPE", "ApprovalRequest", "ShareCheck"]
