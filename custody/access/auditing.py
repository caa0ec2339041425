"""Intent and outcome entries of the access library, linked as the rest of custody links them.

An audited operation writes an ``intent`` entry before it acts and an outcome entry after
(``ok``, or ``denied`` / ``failed`` with the error's type and title), and the outcome names
its intent's seq as ``details.intent_seq`` (as :func:`custody.audit.scope.run_audited`
does), so the log and the monitor (:mod:`custody.monitor.events`) join the two into one
operation. :func:`intended` writes the intent and, when the operation raises, its outcome;
the caller writes the ``ok`` outcome with the ``ref`` it yields. An audit sink must give
an intent its seq: the server's staging of one request (``custody_server.backend.Staging``)
holds other entries back but commits an intent at once. A sink that gave none would leave
the outcome without a link (``intent_ref`` returns {}).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol

from custody.errors import CustodyError, PolicyError


class IntentAudit(Protocol):
    def append(
        self,
        op: str,
        target: str,
        actor: str,
        *,
        outcome: str = "ok",
        details: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]: ...


def intent_ref(entry: Mapping[str, Any]) -> dict[str, Any]:
    """``{"intent_seq": seq}`` of an appended intent entry ({} when it has no seq yet)."""
    seq = entry.get("seq")
    return {"intent_seq": seq} if type(seq) is int else {}


@contextmanager
def intended(
    audit: IntentAudit,
    op: str,
    target: str,
    actor: str,
    details: Mapping[str, Any] | None = None,
) -> Iterator[dict[str, Any]]:
    """Append the intent of *op*; yield the ``ref`` its outcome must carry. If the block
    raises, append the ``denied`` (a PolicyError) or ``failed`` outcome with the ref, and
    re-raise."""
    ref = intent_ref(audit.append(op, target, actor, outcome="intent", details=details))
    try:
        yield ref
    except PolicyError as err:
        audit.append(op, target, actor, outcome="denied",
                     details={**ref, "error": type(err).__name__, "title": err.title})  # fmt: skip
        raise
    except CustodyError as err:
        audit.append(op, target, actor, outcome="failed",
                     details={**ref, "error": type(err).__name__, "title": err.title})  # fmt: skip
        raise
    except Exception as exc:
        audit.append(op, target, actor, outcome="failed",
                     details={**ref, "error": type(exc).__name__})  # fmt: skip
        raise


__all__ = ["IntentAudit", "intended", "intent_ref"]
