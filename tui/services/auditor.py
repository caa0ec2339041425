"""The auditor view's services: verify a transcript bundle against pinned trust keys,
list its events, and export the report.

Verification is offline and read-only (:func:`ceremonies.transcript.verify_bundle`); the
pins (identities with a name and a role) are files the auditor obtained independently,
never taken from the bundle. Every string taken from the bundle is escaped here
(:func:`custody.textsafe.printable`), and the screens show it as plain text, never markup.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from custody.errors import ConfigError, UsageError
from custody.textsafe import printable


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckRow:
    id: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class EventRow:
    seq: int
    time: str
    step: str
    kind: str
    actor: str
    body: str  # canonical JSON of the event's body (never secret: see transcript guard)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditView:
    """The outcome of verifying one transcript bundle against pinned trust keys."""

    bundle: str
    trust_keys: tuple[str, ...]
    ok: bool
    checks: tuple[CheckRow, ...]
    quorums: tuple[str, ...]
    events: tuple[EventRow, ...]
    ceremony_id: str = ""
    proves: str = ""

    def to_report(self) -> dict[str, Any]:
        return {
            "bundle": self.bundle,
            "ceremony_id": self.ceremony_id,
            "trust_keys": list(self.trust_keys),
            "ok": self.ok,
            "proves": self.proves,
            "checks": [{"id": c.id, "ok": c.ok, "detail": c.detail} for c in self.checks],
            "quorums": list(self.quorums),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class BundleRow:
    """One ceremony transcript bundle of the home (public: the store's ceremonies table)."""

    ceremony_id: str
    kind: str
    state: str
    created: int
    bundle: str


def home_bundles(home_root: Path) -> tuple[BundleRow, ...]:
    """The home's ceremony bundles, newest first (no PIN; an absent home has none)."""
    from ceremonies.runner import open_ceremonies
    from custody.config import Home
    from custody.deployment import open_deployment

    home = Home(home_root)
    if not home.exists() or (home.load().store is None and not home.db_path.exists()):
        return ()  # no store (a PostgreSQL store has no file in the home)
    with open_deployment(home) as dep:
        rows = open_ceremonies(dep)
    return tuple(
        BundleRow(
            ceremony_id=printable(str(r["id"])),
            kind=printable(str(r["kind"])),
            state=printable(str(r["state"])),
            created=int(r.get("created") or 0),
            bundle=printable(str(r.get("bundle") or "")),
        )
        for r in rows
        if r.get("bundle") and Path(str(r["bundle"])).exists()
    )


def trust_key_names(path: str) -> tuple[str, ...]:
    """Validate a trust-key file as it is pinned: the identities it holds, as
    ``NAME (ROLE)``.

    Raises:
        ConfigError: not a readable file (a directory, a missing path).
        UsageError: not a public key, identity or pin list (a PIN file, for one).
    """
    from ceremonies.transcript.pins import load_pins

    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(
            f"{p.name or p} is not a file",
            "Pin a public-key file: NAME.pub.json, a pin list, or a line of 64 hex digits.",
        )
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"Cannot read trust key {p.name}", "Check the path.") from exc
    keys = load_pins(raw, default_name=p.name.split(".")[0])
    if not keys:
        raise UsageError(f"{p.name} holds no key", "Pin a file with at least one public key.")
    return tuple(printable(f"{k.name} ({k.role or 'no role'})") for k in keys)


def verify_bundle_view(bundle: str, trust_keys: Sequence[str]) -> AuditView:
    """Verify *bundle* offline against the pinned *trust_keys* files.

    Raises:
        UsageError: no bundle or no trust key given. ConfigError: the verifier is not
        available. TranscriptError: the bundle cannot be read at all.
    """
    if not bundle:
        raise UsageError("No bundle given", "Type the path of a transcript bundle.")
    if not trust_keys:
        raise UsageError(
            "No trust key pinned",
            "Pin at least one public key file you obtained yourself (never from the bundle).",
        )
    from ceremonies.transcript import load_bundle, verify_bundle
    from ceremonies.transcript.checks import parse
    from ceremonies.transcript.pins import Pins, load_pins

    keys: list[Any] = []
    for path in trust_keys:
        p = Path(path).expanduser()
        try:
            raw = p.read_bytes()
        except OSError as exc:
            raise ConfigError(f"Cannot read trust key {p}", "Check the path you pinned.") from exc
        keys += load_pins(raw, default_name=p.name.split(".")[0])
    data = load_bundle(Path(bundle).expanduser())
    report = verify_bundle(data, Pins.of(keys))
    e_ = printable
    events = tuple(
        EventRow(
            seq=e.seq,
            time=_event_time(e.time),
            step=e_(e.step),
            kind=e_(e.kind),
            actor=e_(e.actor),
            body=e_(json.dumps(dict(e.body), sort_keys=True, default=str, ensure_ascii=False)),
        )
        for e in parse(data).events
        if e is not None
    )
    quorum = next((r for r in report.results if r.id == "quorum"), None)
    lines = (quorum.notes if quorum.ok else quorum.problems) if quorum is not None else ()
    return AuditView(
        bundle=bundle,
        trust_keys=tuple(trust_keys),
        ok=report.ok,
        checks=tuple(CheckRow(id=r.id, ok=r.ok, detail=r.detail) for r in report.results),
        quorums=tuple(e_(x) for x in lines),
        events=events,
        ceremony_id=e_(report.ceremony_id or ""),
        proves=e_(report.proves),
    )


def _event_time(t: Any) -> str:
    if isinstance(t, int | float):
        return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")
    return str(t)


def export_report(view: AuditView, path: str) -> Path:
    """Write the verification report as JSON (``.json``) or text (anything else).

    Raises:
        UsageError: no path. StorageError: the file cannot be written.
    """
    from custody.errors import StorageError

    if not path:
        raise UsageError("No report path given", "Type where to write the report.")
    p = Path(path).expanduser()
    if p.suffix == ".json":
        data = json.dumps(view.to_report(), indent=2, sort_keys=True) + "\n"
    else:
        lines = [
            f"bundle: {view.bundle}",
            f"ceremony: {view.ceremony_id}",
            f"result: {'PASS' if view.ok else 'FAIL'}",
            "",
        ]
        lines += [f"[{'pass' if c.ok else 'FAIL'}] {c.id}: {c.detail}" for c in view.checks]
        lines += ["", *view.quorums]
        data = "\n".join(lines) + "\n"
    try:
        p.write_text(data, encoding="utf-8")
    except OSError as exc:
        raise StorageError(
            f"Cannot write the report to {p}", "Check the directory and its permissions."
        ) from exc
    return p
