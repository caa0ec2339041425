"""Offline, pure verification of a ceremony transcript bundle.

:func:`verify_bundle` takes a bundle (path or :class:`BundleData`) and the auditor's
*pinned* trust keys, and returns a :class:`Report` with one result per check id in
:data:`CHECK_IDS`. It reads the bundle once and does no other I/O; trust anchors come only
from the caller, never from the bundle. ``docs/transcripts.md`` lists what each check
catches.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from custody.audit.signers import TrustKey
from custody.errors import TranscriptError

from .bundle import BundleData, load_bundle
from .checks import (
    Parsed,
    check_artifacts,
    check_binding,
    check_chain,
    check_checkpoints,
    check_completeness,
    check_policy_signatures,
    parse,
)
from .rules import Rules

CHECK_IDS: tuple[str, ...] = (
    "canonical",
    "policy-signatures",
    "ceremony-binding",
    "chain",
    "checkpoints",
    "completeness",
    "signatures",
    "enrolment",
    "role",
    "key-validity",
    "quorum",
    "script-order",
    "artifacts",
    "no-secrets",
)
RULE_CHECKS = (
    "signatures",
    "enrolment",
    "role",
    "key-validity",
    "quorum",
    "script-order",
    "no-secrets",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckResult:
    """The outcome of one check: pass/fail, problems (with names) and notes."""

    id: str
    ok: bool
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def detail(self) -> str:
        return "; ".join(self.problems[:5] if not self.ok else self.notes[:3])

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ok": self.ok,
            "problems": list(self.problems),
            "notes": list(self.notes),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """All check results of one bundle; ``ok`` only when every check passed."""

    ceremony_id: str | None
    events: int
    results: tuple[CheckResult, ...]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def failed(self) -> tuple[str, ...]:
        return tuple(r.id for r in self.results if not r.ok)

    def result(self, check_id: str) -> CheckResult:
        return next(r for r in self.results if r.id == check_id)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "ceremony_id": self.ceremony_id,
            "events": self.events,
            "failed": list(self.failed),
            "checks": [r.to_json() for r in self.results],
        }

    def text(self) -> str:
        out = [f"ceremony {self.ceremony_id or '?'}: {self.events} events"]
        for r in self.results:
            out.append(f"  {'PASS' if r.ok else 'FAIL'}  {r.id:<18} {r.detail}")
            if r.ok and r.id == "quorum":
                out += [f"          {n}" for n in r.notes]
            if not r.ok and len(r.problems) > 5:
                out.append(f"          (+{len(r.problems) - 5} more problems)")
        out.append(
            "verdict: " + ("VALID" if self.ok else "INVALID (" + ", ".join(self.failed) + ")")
        )
        return "\n".join(out)


def verify_bundle(
    bundle: BundleData | str | os.PathLike[str],
    trust_keys: Sequence[TrustKey],
    *,
    min_policy_signatures: int = 1,
) -> Report:
    """Run every check on *bundle* against the pinned *trust_keys*.

    Args:
        bundle: a bundle directory/archive path, or its bytes as :class:`BundleData`.
        trust_keys: the public keys the auditor pinned; policy signatures count only here.
        min_policy_signatures: the auditor's own floor on distinct pinned policy signers
            (the policy's ``policy_quorum`` applies too).

    Returns:
        The report; it never raises for a bad bundle, which simply fails checks.

    Raises:
        TranscriptError: a path was given and it cannot be read at all.
    """
    data = bundle if isinstance(bundle, BundleData) else load_bundle(bundle)
    p = parse(data)
    found: dict[str, tuple[list[str], list[str]]] = {c: ([], []) for c in CHECK_IDS}
    found["canonical"][0].extend(p.problems)
    if p.signed is None:
        for c in CHECK_IDS[1:]:
            found[c][0].append("policy.json is unreadable, nothing can be checked against it")
        return _report(None, p, found)
    signed = p.signed
    rules = Rules(signed.policy)

    def put(cid: str, check: Callable[[], tuple[list[str], list[str]]]) -> None:
        try:
            res = check()
        except (TranscriptError, ValueError, KeyError, TypeError) as exc:
            # A damaged record must fail its check, never crash the verifier.
            found[cid][0].append(f"malformed input: {_describe(exc)}")
            return
        found[cid][0].extend(res[0])
        found[cid][1].extend(res[1])

    put(
        "policy-signatures",
        lambda: check_policy_signatures(signed, trust_keys, min_policy_signatures),
    )
    put("ceremony-binding", lambda: check_binding(signed, p))
    put("chain", lambda: check_chain(signed, p))
    put("checkpoints", lambda: check_checkpoints(rules, p))
    put("completeness", lambda: check_completeness(rules, p))
    put("artifacts", lambda: check_artifacts(data, p))
    for ev in p.events:
        if ev is None:
            continue
        try:
            fed = rules.feed(ev)
        except (TranscriptError, ValueError, KeyError, TypeError) as exc:
            found["canonical"][0].append(f"event seq {ev.seq}: malformed ({_describe(exc)})")
            continue
        for cid, msg in fed:
            found[cid][0].append(msg)
    for cid, msg in rules.info:
        found[cid][1].append(msg)
    n_sigs = sum(len(e.signatures) for e in p.events if e)
    found["signatures"][1].append(f"{n_sigs} event signatures")
    return _report(signed.policy.ceremony_id, p, found)


def _describe(exc: BaseException) -> str:
    title = getattr(exc, "title", None)
    return str(title) if title else type(exc).__name__


_PASS_NOTES = {
    "canonical": "every record is RFC 8785 canonical and well-formed",
    "signatures": "every signature verifies",
    "enrolment": "every actor, signer and approver is enrolled",
    "role": "every actor acted within their role",
    "key-validity": "every key was valid (not expired or revoked) when used",
    "quorum": "no quorum-gated actions",
    "script-order": "events follow the script",
    "no-secrets": "no secret-shaped values",
}


def _report(cid: str | None, p: Parsed, found: dict[str, tuple[list[str], list[str]]]) -> Report:
    for c, note in _PASS_NOTES.items():
        if not found[c][1]:
            found[c][1].append(note)
    return Report(
        ceremony_id=cid,
        events=len(p.lines),
        results=tuple(
            CheckResult(
                id=c, ok=not found[c][0], problems=tuple(found[c][0]), notes=tuple(found[c][1])
            )
            for c in CHECK_IDS
        ),
    )
