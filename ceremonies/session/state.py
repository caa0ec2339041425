"""What a ceremony session shows its driver: :class:`SessionState` (public, secret-free)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ceremonies.sharecheck import LiveCheck, QuorumView, ShareSet
from ceremonies.transcript.records import Approval


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionState:
    """The open ceremony as its session sees it after the last call.

    ``status``/``awaiting``/``step`` come from the runner's last outcome (``awaiting`` is
    ``shares`` or ``approvals`` only while it waits for them); ``checks`` are the shares
    handed in during this round with their live checks (their words are forgotten once the
    runner took them); ``approvals`` are those collected for the current request;
    ``offer`` is the transport offer of a waiting share step (the runner's public
    dictionary); ``sas`` are (custodian or source, SAS) of remote hand-ins; ``cards`` name
    the custodians whose share cards this ceremony issued. No field holds a secret.
    """

    ceremony_id: str
    kind: str
    status: str
    awaiting: str | None
    step: str | None
    done: tuple[str, ...]
    facts: Mapping[str, Any] = field(repr=False)
    request: Mapping[str, Any] | None
    messages: tuple[str, ...]
    refusals: tuple[str, ...]
    bundle: str
    checks: tuple[LiveCheck, ...]
    approvals: tuple[Approval, ...]
    now: int
    share_set: ShareSet | None = field(repr=False)
    quorum: QuorumView | None
    offer: Mapping[str, Any] | None
    sas: tuple[tuple[str, str], ...]
    cards: tuple[str, ...]
    expires_at: int

    @property
    def approvals_needed(self) -> int:
        return int(self.request.get("needed", 0)) if self.request else 0

    def valid_approvers(self) -> set[str]:
        """Approvers whose approval has not expired (by the session's clock)."""
        return {a.approver for a in self.approvals if a.expires_at >= self.now}
