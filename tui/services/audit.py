"""The audit log viewer's services: tail the operational log (``HOME/audit.db``), filter
it, and produce or check an inclusion proof (RFC 9162) of one entry.

Entries never hold a secret value (the log records operations, targets and outcomes);
proofs are checked against trust keys the user pins. Every string read from the log is
escaped here (:func:`custody.textsafe.printable`); the screen shows it as plain text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from custody.errors import UsageError
from custody.textsafe import printable
from tui.services.common import Field

if TYPE_CHECKING:
    from custody.audit.log import AuditLog


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntryRow:
    """One entry of the operational audit log (``HOME/audit.db``); never holds a value."""

    seq: int
    time: int  # Unix seconds, as recorded
    actor: str
    op: str
    target: str
    outcome: str  # intent | ok | denied | failed
    details: tuple[tuple[str, str], ...] = ()
    prev: str = ""
    log: str = ""

    @property
    def when(self) -> str:
        return datetime.fromtimestamp(self.time, UTC).strftime("%Y-%m-%d %H:%M:%S")

    @classmethod
    def of(cls, line: bytes | str) -> AuditEntryRow:
        e = json.loads(line)
        p = printable
        return cls(
            seq=int(e["seq"]),
            time=int(e["time"]),
            actor=p(e["actor"]),
            op=p(e["op"]),
            target=p(e["target"]),
            outcome=p(e["outcome"]),
            details=tuple(
                (p(k), p(json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v))
                for k, v in sorted(e.get("details", {}).items())
            ),
            prev=p(e.get("prev", "")),
            log=p(e.get("log", "")),
        )

    def fields(self) -> list[Field]:
        out = [
            Field(label="seq", value=str(self.seq)),
            Field(label="time", value=self.when + " UTC"),
            Field(label="actor", value=self.actor),
            Field(label="op", value=self.op),
            Field(label="target", value=self.target),
            Field(label="outcome", value=self.outcome),
        ]
        out += [Field(label=k, value=v) for k, v in self.details]
        return [
            *out,
            Field(label="prev (chain)", value=self.prev),
            Field(label="log id", value=self.log),
        ]


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditTail:
    """Entries ``[start, size)`` of the log, and how far its checkpoints reach."""

    size: int
    start: int
    entries: tuple[AuditEntryRow, ...]
    checkpoints: int
    covered: int  # tree size of the latest checkpoint (0: none)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProofView:
    """An inclusion proof of one entry, and the result of checking it (if a key is pinned)."""

    seq: int
    tree_size: int
    root: str
    doc: dict[str, Any] = field(hash=False, compare=False)
    trust_keys: tuple[str, ...] = ()
    ok: bool | None = None  # None: not checked (no trust key pinned)
    summary: str = ""


def entry_matches(e: AuditEntryRow, flt: str) -> bool:
    """Filter terms, all of which must match: ``op=``, ``actor=``, ``outcome=``, or text."""
    for term in flt.split():
        name, sep, value = term.partition("=")
        value = value.lower()
        if sep and name in ("op", "actor", "outcome", "target"):
            have = getattr(e, name).lower()
            if (value not in have) if name != "outcome" else (have != value):
                return False
        elif (
            term.lower()
            not in " ".join(
                (e.op, e.target, e.actor, e.outcome, *(f"{k}={v}" for k, v in e.details))
            ).lower()
        ):
            return False
    return True


NO_AUDIT_LOG = "It is created by the first audited command (custody status, kek rotate ...)."


def _open_audit(home_root: Path) -> AuditLog:
    from custody.deployment import open_audit_log

    return open_audit_log(home_root, hint=NO_AUDIT_LOG, timeout=5.0)


def audit_tail(home_root: Path, start: int, limit: int = 5000) -> AuditTail:
    """Entries from *start* (at most the last *limit*), for the live viewer.

    Raises:
        AuditError: no audit log, or it cannot be read.
    """
    from custody.errors import AuditError, StorageError

    try:
        with _open_audit(home_root) as log:
            n = log.size()
            first = max(start, n - limit, 0)
            lines = log.lines(first, n) if n > first else []
            cps = [json.loads(c) for c in log.checkpoint_lines()]
    except StorageError as exc:
        raise AuditError(
            "Cannot read the audit log", "Check the home and its permissions."
        ) from exc
    return AuditTail(
        size=n,
        start=first,
        entries=tuple(AuditEntryRow.of(x) for x in lines),
        checkpoints=len(cps),
        covered=max((int(c["tree_size"]) for c in cps), default=0),
    )


def _trust(paths: Sequence[str]) -> list[Any]:
    from custody.audit.signers import parse_trust_key

    out = []
    for path in paths:
        p = Path(path).expanduser()
        try:
            out.append(parse_trust_key(p.read_bytes(), default_name=p.stem))
        except OSError as exc:
            raise UsageError(f"Cannot read trust key {p}", "Check the path you pinned.") from exc
    return out


def audit_proof(home_root: Path, seq: int, trust_keys: Sequence[str]) -> ProofView:
    """Produce the inclusion proof of entry *seq*, and check it against *trust_keys*.

    Raises:
        AuditError: no such entry; no checkpoint covers it yet; or the check failed
            (not signed by a pinned key, entry not included). UsageError: unreadable key.
    """
    from custody.audit.records import check_proof
    from custody.errors import AuditError

    with _open_audit(home_root) as log:
        try:
            doc = log.proof(seq)
        except AuditError as err:
            if "checkpoint" in err.title:
                raise AuditError(
                    err.title,
                    "A proof needs a signed checkpoint covering the entry. Sign one with "
                    "'custody audit checkpoint --home HOME --pin-file FILE' (the token's audit "
                    "key), then press p again.",
                ) from err
            raise
    cp = doc["checkpoint"]
    view = ProofView(
        seq=seq,
        tree_size=int(cp["tree_size"]),
        root=str(cp["root"]),
        doc=doc,
        trust_keys=tuple(trust_keys),
    )
    if not trust_keys:
        return view
    summary = check_proof(doc, _trust(trust_keys))
    return ProofView(
        seq=seq,
        tree_size=view.tree_size,
        root=view.root,
        doc=doc,
        trust_keys=tuple(trust_keys),
        ok=True,
        summary=printable(summary),
    )


def export_proof(proof: ProofView, path: str) -> Path:
    """Write the proof JSON exactly as ``custody audit proof --out`` does.

    Raises:
        UsageError: no path. StorageError: the file cannot be written.
    """
    from custody.errors import StorageError

    if not path:
        raise UsageError("No proof path given", "Type where to write the proof.")
    p = Path(path).expanduser()
    try:
        p.write_text(json.dumps(proof.doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    except OSError as exc:
        raise StorageError(
            f"Cannot write the proof to {p}", "Check the directory and its permissions."
        ) from exc
    return p
