"""What a ceremony run takes and gives: the shares and approvals handed in, the outcome of a
run, and the runner's own refusals. A leaf below the runner and its steps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ceremonies.runner.views import HandIn
from ceremonies.transcript.records import Approval
from custody.errors import CeremonyError


class CeremonyExpired(CeremonyError):
    """An unfinished ceremony ran past its ``ceremony_expiry_minutes``; it can only be
    aborted."""


class TokenNeeded(CeremonyError):
    """The ceremony holds objects on the deployment's token (its hold key, root versions it
    created) that only the token can destroy: it is not aborted or closed without it.
    Nothing was recorded or changed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ShareInput:
    """One share handed in: where it came from, its words, and its envelope bytes."""

    source: str
    text: str = field(repr=False)
    envelope: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Inputs:
    """What people hand in for this run of the ceremony."""

    shares: Sequence[ShareInput] = ()
    approvals: Sequence[Approval] = ()
    sealed: Sequence[tuple[str, str]] = field(default=(), repr=False)
    """Remote hand-ins: (source, ``custody-blob:...`` text) sealed to one of this
    ceremony's transport offers (:meth:`CeremonyRunner.offer`)."""
    confirm_sas: Sequence[tuple[str, str]] = field(default=(), repr=False)
    """The coordinator's confirmations of remote hand-ins: (custodian, the words the
    custodian read out), the custodian "" for the one remote hand-in waiting. A remote
    share is held, not counted, until its short authentication string is confirmed
    (:mod:`ceremonies.runner.held`); words that differ reject it (``sas-mismatch``)."""


@dataclass(slots=True, kw_only=True)
class Outcome:
    """Where a run stopped: ``closed``, ``aborted`` or ``awaiting-input``.

    ``handins``: one :class:`HandIn` per share handed in to this runner (accepted, held,
    duplicate or rejected, with the SAS of a remote one); the hand-in lines of
    ``messages`` are derived from them. Drivers read the records, not the lines.
    """

    ceremony_id: str
    kind: str
    status: str
    bundle: str
    awaiting: str | None = None
    step: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    request: dict[str, Any] | None = None
    handins: tuple[HandIn, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.status != "aborted",
            "ceremony_id": self.ceremony_id,
            "kind": self.kind,
            "status": self.status,
            "bundle": self.bundle,
            "awaiting": self.awaiting,
            "step": self.step,
            "facts": self.facts,
            "messages": self.messages,
            "request": self.request,
            "handins": [h.to_json() for h in self.handins],
        }
