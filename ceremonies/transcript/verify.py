"""Offline, pure verification of a ceremony transcript bundle.

:func:`verify_bundle` takes a bundle (path or :class:`BundleData`) and the auditor's
*pinned* identities (:mod:`ceremonies.transcript.pins`), and returns a :class:`Report`
with one result per check id in :data:`CHECK_IDS`. It reads the bundle (and the previous
one, when given) once and does no other I/O; trust anchors come only from the caller,
never from the bundle. ``docs/transcripts.md`` lists what each check catches.

:meth:`Report.text` escapes every string that came from the bundle
(:func:`custody.textsafe.printable`) and ends with the verdict line, so nothing in a
bundle can redraw or imitate it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from custody.audit.signers import TrustKey
from custody.errors import TranscriptError
from custody.textsafe import printable

from .bundle import BundleData, load_bundle
from .checks import (
    Parsed,
    check_artifacts,
    check_binding,
    check_chain,
    check_checkpoints,
    check_completeness,
    check_identities,
    check_policy_signatures,
    check_prev_link,
    parse,
)
from .pins import Pins, and_list
from .rules import Rules

CHECK_IDS: tuple[str, ...] = (
    "canonical",
    "policy-signatures",
    "identities",
    "ceremony-binding",
    "chain",
    "checkpoints",
    "completeness",
    "signatures",
    "enrolment",
    "role",
    "key-validity",
    "times",
    "quorum",
    "script-order",
    "artifacts",
    "no-secrets",
    "prev-link",
)
RULE_CHECKS = (
    "signatures",
    "enrolment",
    "role",
    "key-validity",
    "times",
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
        """The first problems (or notes), escaped for display."""
        return "; ".join(
            printable(x) for x in (self.problems[:5] if not self.ok else self.notes[:3])
        )

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
    policy_signers: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def failed(self) -> tuple[str, ...]:
        return tuple(r.id for r in self.results if not r.ok)

    def result(self, check_id: str) -> CheckResult:
        return next(r for r in self.results if r.id == check_id)

    @property
    def proves(self) -> str:
        """What a VALID verdict establishes, and nothing more."""
        if not self.ok:
            return "nothing (a check failed)"
        return (
            f"signed by pinned super-admins {and_list(list(self.policy_signers))}; "
            "every check above passed against your pins"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "ceremony_id": self.ceremony_id,
            "events": self.events,
            "failed": list(self.failed),
            "policy_signers": list(self.policy_signers),
            "proves": self.proves,
            "checks": [r.to_json() for r in self.results],
        }

    def body_lines(self) -> list[str]:
        """The report without its verdict; every bundle string is escaped."""
        out = [f"ceremony {printable(self.ceremony_id or '?')}: {self.events} events"]
        for r in self.results:
            out.append(f"  {'PASS' if r.ok else 'FAIL'}  {r.id:<18} {r.detail}")
            if r.ok and r.id == "quorum":
                out += [f"          {printable(n)}" for n in r.notes]
            if not r.ok and len(r.problems) > 5:
                out.append(f"          (+{len(r.problems) - 5} more problems)")
        return out

    def verdict(self) -> str:
        """The last line of every text report."""
        return "verdict: " + ("VALID" if self.ok else "INVALID (" + ", ".join(self.failed) + ")")

    def text(self) -> str:
        return "\n".join([*self.body_lines(), f"proves: {printable(self.proves)}", self.verdict()])


def verify_bundle(
    bundle: BundleData | str | os.PathLike[str],
    trust_keys: Sequence[TrustKey] | Pins,
    *,
    min_policy_signatures: int = 1,
    prev: BundleData | str | os.PathLike[str] | None = None,
) -> Report:
    """Run every check on *bundle* against the pinned identities *trust_keys*.

    Args:
        bundle: a bundle directory/archive path, or its bytes as :class:`BundleData`.
        trust_keys: the identities the auditor pinned (name, key, role). The policy counts
            only when signed by enough pinned super-admins; approvals and co-signatures
            count only from pinned identities in the quorum's role.
        min_policy_signatures: the auditor's own floor on distinct pinned policy signers
            (the policy's ``policy_quorum`` and the two-super-admin floor apply too).
        prev: the previous ceremony's bundle; then ``prev-link`` checks that this policy's
            ``prev_checkpoint`` is its final checkpoint, and that it verifies.

    Returns:
        The report; it never raises for a bad bundle, which simply fails checks.

    Raises:
        TranscriptError: a path was given and it cannot be read at all.
        UsageError: the pins contradict each other (one name, two keys).
    """
    pins = trust_keys if isinstance(trust_keys, Pins) else Pins.of(trust_keys)
    data = bundle if isinstance(bundle, BundleData) else load_bundle(bundle)
    prev_data = (
        None if prev is None else prev if isinstance(prev, BundleData) else load_bundle(prev)
    )
    p = parse(data)
    found: dict[str, tuple[list[str], list[str]]] = {c: ([], []) for c in CHECK_IDS}
    found["canonical"][0].extend(p.problems)
    if p.signed is None:
        for c in CHECK_IDS[1:]:
            found[c][0].append("policy.json is unreadable, nothing can be checked against it")
        return _report(None, p, found)
    signed = p.signed
    rules = Rules(signed.policy, pins)

    def put(cid: str, check: Callable[[], tuple[list[str], list[str]]]) -> None:
        try:
            res = check()
        except (TranscriptError, ValueError, KeyError, TypeError) as exc:
            # A damaged record must fail its check, never crash the verifier.
            found[cid][0].append(f"malformed input: {_describe(exc)}")
            return
        found[cid][0].extend(res[0])
        found[cid][1].extend(res[1])

    counted: list[str] = []
    put(
        "policy-signatures",
        lambda: check_policy_signatures(
            signed, pins, min_policy_signatures, exact=p.policy_exact, counted=counted
        ),
    )
    put("identities", lambda: check_identities(signed, pins))
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
    found["no-secrets"][1].extend(_delivery_notes(p))
    n_sigs = sum(len(e.signatures) for e in p.events if e)
    found["signatures"][1].append(f"{n_sigs} event signatures")
    if prev_data is None:
        put("prev-link", lambda: check_prev_link(signed, None, None))
    else:
        prev_ok = verify_bundle(prev_data, pins).ok
        put("prev-link", lambda: check_prev_link(signed, parse(prev_data), prev_ok))
    signers = tuple(counted) if not found["policy-signatures"][0] else ()
    return _report(signed.policy.ceremony_id, p, found, signers)


def _delivery_notes(p: Parsed) -> list[str]:
    """How the shares of a generate or reshare left the coordinator: sealed to each
    custodian, or in plain text (``--plain-shares``, or a bundle from before sealed issue)."""
    kinds: dict[str, int] = {}
    for ev in p.events:
        if ev is not None and ev.kind == "share.issued":
            d = ev.body.get("delivery")
            k = d if isinstance(d, str) else "plain"
            kinds[k] = kinds.get(k, 0) + 1
    out = []
    if kinds.get("sealed-x25519"):
        out.append(f"{kinds['sealed-x25519']} shares sealed to their custodians at issue")
    plain = sum(n for k, n in kinds.items() if k != "sealed-x25519")
    if plain:
        out.append(
            f"NOTE: {plain} shares were issued in plain text (--plain-shares): the "
            "coordinator's disk held their words"
        )
    return out


def _describe(exc: BaseException) -> str:
    title = getattr(exc, "title", None)
    return str(title) if title else type(exc).__name__


_PASS_NOTES = {
    "canonical": "every record is RFC 8785 canonical and well-formed",
    "signatures": "every signature verifies",
    "enrolment": "every actor, signer and approver is enrolled",
    "role": "every actor acted within their role",
    "key-validity": "every key was valid (not expired or revoked) when used",
    "times": "no event or approval is dated before the policy",
    "quorum": "no quorum-gated actions",
    "script-order": "events follow the script",
    "no-secrets": "no secret-shaped values",
}


def _report(
    cid: str | None,
    p: Parsed,
    found: dict[str, tuple[list[str], list[str]]],
    signers: tuple[str, ...] = (),
) -> Report:
    for c, note in _PASS_NOTES.items():
        if not found[c][1]:
            found[c][1].append(note)
    return Report(
        ceremony_id=cid,
        policy_signers=signers,
        events=len(p.lines),
        results=tuple(
            CheckResult(
                id=c, ok=not found[c][0], problems=tuple(found[c][0]), notes=tuple(found[c][1])
            )
            for c in CHECK_IDS
        ),
    )
