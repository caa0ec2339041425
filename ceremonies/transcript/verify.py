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
from custody.textsafe import printable

from .bundle import BundleData, BundleSource, open_bundle
from .checks import (
    MALFORMED,
    EventChecks,
    Lines,
    Summary,
    check_identities,
    check_policy_signatures,
    check_prev_link,
    checkpoint_sizes,
    parse_checkpoints,
    parse_event,
    parse_policy,
)
from .pins import Pins, and_list
from .records import Event
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
    bundle: BundleData | BundleSource | str | os.PathLike[str],
    trust_keys: Sequence[TrustKey] | Pins,
    *,
    min_policy_signatures: int = 1,
    prev: BundleData | str | os.PathLike[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Report:
    """Run every check on *bundle* against the pinned identities *trust_keys*.

    One streaming pass over the events (each line parsed once; a directory bundle is read
    from the disk as it goes, so memory stays flat), then one over the checkpoints.

    Args:
        bundle: a bundle directory/archive path, its bytes as :class:`BundleData`, or a
            :func:`~ceremonies.transcript.bundle.open_bundle` source.
        trust_keys: the identities the auditor pinned (name, key, role). The policy counts
            only when signed by enough pinned super-admins; approvals and co-signatures
            count only from pinned identities in the quorum's role.
        min_policy_signatures: the auditor's own floor on distinct pinned policy signers
            (the policy's ``policy_quorum`` and the two-super-admin floor apply too).
        prev: the previous ceremony's bundle; then ``prev-link`` checks that this policy's
            ``prev_checkpoint`` is its final checkpoint, and that it verifies.
        progress: called with the bytes of ``events.jsonl`` read so far, every
            ``PROGRESS_EVERY`` events (see :meth:`BundleSource.events_size` for the total).

    Returns:
        The report; it never raises for a bad bundle, which simply fails checks.

    Raises:
        TranscriptError: a path was given and it cannot be read at all.
        UsageError: the pins contradict each other (one name, two keys).
    """
    pins = trust_keys if isinstance(trust_keys, Pins) else Pins.of(trust_keys)
    src = bundle if isinstance(bundle, BundleSource) else open_bundle(bundle)
    prev_src = None if prev is None else open_bundle(prev)
    return _verify(src, pins, min_policy_signatures, prev_src, progress)[0]


PROGRESS_EVERY = 10_000


def _verify(
    src: BundleSource,
    pins: Pins,
    minimum: int,
    prev: BundleSource | None,
    progress: Callable[[int], None] | None,
) -> tuple[Report, Summary]:
    try:
        return _verify_source(src, pins, minimum, prev, progress)
    except OSError as exc:  # a read error part way through a file of the directory
        raise src.unreadable(exc) from exc


def _verify_source(
    src: BundleSource,
    pins: Pins,
    minimum: int,
    prev: BundleSource | None,
    progress: Callable[[int], None] | None,
) -> tuple[Report, Summary]:
    found: dict[str, tuple[list[str], list[str]]] = {c: ([], []) for c in CHECK_IDS}
    canonical = found["canonical"][0]
    canonical.extend(src.problems)
    signed, exact = parse_policy(src.policy, canonical)
    rules = Rules(signed.policy, pins) if signed is not None else None
    with src.checkpoints() as fh:
        sizes = checkpoint_sizes(fh)
    dead: dict[str, BaseException] = {}
    ev = EventChecks(signed, sizes, src.artifact_map(), dead) if signed is not None else None
    fed: list[tuple[str, str]] = []  # the rules' findings, in event order
    malformed: list[str] = []  # events the rules could not read (check canonical, last)
    ev_problems: list[str] = []
    last: Event | None = None
    n = 0
    with src.events() as fh:
        lines = Lines(fh, "events.jsonl")
        for i, ln in enumerate(lines):
            e = parse_event(i, ln, ev_problems)
            last, n = e, i + 1
            if ev is not None:
                ev.feed(i, ln, e)
            if rules is not None and e is not None:
                try:
                    fed += rules.feed(e)
                except MALFORMED as exc:
                    malformed.append(f"event seq {e.seq}: malformed ({_describe(exc)})")
            if progress is not None and n % PROGRESS_EVERY == 0:
                progress(lines.read)
        if progress is not None:
            progress(lines.read)
    canonical += lines.problems()
    canonical += ev_problems
    with src.checkpoints() as fh:
        cp_lines = Lines(fh, "checkpoints.jsonl")
        cp_problems: list[str] = []
        cps = parse_checkpoints(cp_lines, cp_problems)
        fin = None
        if ev is not None and rules is not None:
            ev.feed_checkpoints(rules, cps)
            fin = ev.fin
        else:
            for fin in cps:  # noqa: B007 - parsed for their problems; the last is kept
                pass
    canonical += cp_lines.problems()
    canonical += cp_problems
    summary = Summary(signed, n, last, fin)
    if signed is None or rules is None or ev is None:
        for c in CHECK_IDS[1:]:
            found[c][0].append("policy.json is unreadable, nothing can be checked against it")
        return _report(None, n, found), summary

    def put(cid: str, check: Callable[[], tuple[list[str], list[str]]]) -> None:
        if cid in dead:
            found[cid][0].append(f"malformed input: {_describe(dead[cid])}")
            return
        try:
            res = check()
        except MALFORMED as exc:
            # A damaged record must fail its check, never crash the verifier.
            found[cid][0].append(f"malformed input: {_describe(exc)}")
            return
        found[cid][0].extend(res[0])
        found[cid][1].extend(res[1])

    counted: list[str] = []
    put(
        "policy-signatures",
        lambda: check_policy_signatures(signed, pins, minimum, exact=exact, counted=counted),
    )
    put("identities", lambda: check_identities(signed, pins))
    put("ceremony-binding", ev.binding)
    put("chain", ev.chain)
    put("checkpoints", ev.checkpoints)
    put("completeness", lambda: ev.completeness(rules))
    put("artifacts", ev.artifacts)
    canonical += malformed
    for cid, msg in fed:
        found[cid][0].append(msg)
    for cid, msg in rules.info:
        found[cid][1].append(msg)
    found["no-secrets"][1].extend(_delivery_notes(ev.kinds))
    found["signatures"][1].append(f"{ev.sigs} event signatures")
    if prev is None:
        put("prev-link", lambda: check_prev_link(signed, None, None))
    else:
        prev_report, prev_summary = _verify(prev, pins, 1, None, None)
        put("prev-link", lambda: check_prev_link(signed, prev_summary, prev_report.ok))
    signers = tuple(counted) if not found["policy-signatures"][0] else ()
    return _report(signed.policy.ceremony_id, n, found, signers), summary


def _delivery_notes(kinds: dict[str, int]) -> list[str]:
    """How the shares of a generate or reshare left the coordinator: sealed to each
    custodian, or in plain text (``--plain-shares``, or a bundle from before sealed issue)."""
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
    events: int,
    found: dict[str, tuple[list[str], list[str]]],
    signers: tuple[str, ...] = (),
) -> Report:
    for c, note in _PASS_NOTES.items():
        if not found[c][1]:
            found[c][1].append(note)
    return Report(
        ceremony_id=cid,
        policy_signers=signers,
        events=events,
        results=tuple(
            CheckResult(
                id=c, ok=not found[c][0], problems=tuple(found[c][0]), notes=tuple(found[c][1])
            )
            for c in CHECK_IDS
        ),
    )
