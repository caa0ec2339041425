"""Structural checks of a bundle: parsing/canonical form, policy signatures against the
auditor's pins, roster identities, ceremony binding, the hash chain, Merkle checkpoints,
completeness, artifacts and the link to the previous ceremony.

Each function is pure: it takes parsed data and returns ``(problems, notes)`` for one
check id. The authority checks (signatures, roles, quorum, script...) live in
:mod:`ceremonies.transcript.rules`.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from custody.audit.merkle import EMPTY_ROOT, Frontier, verify_consistency
from custody.audit.signers import verify_signature
from custody.canonical import canonical_bytes, strict_loads
from custody.errors import IntegrityError, TranscriptError

from .bundle import BundleData
from .model import KIND_CLOSE, KIND_OPEN, FormatError, SignedPolicy
from .pins import SUPER_ADMIN, Pins, and_list
from .records import Checkpoint, Event, chain_hash, event_leaf
from .rules import Rules, plural

Result = tuple[list[str], list[str]]


def artifact_ref(name: str, blob: bytes) -> dict[str, str]:
    return {"name": name, "sha256": hashlib.sha256(blob).hexdigest()}


@dataclass(slots=True)
class Parsed:
    """A bundle split into lines and parsed as far as possible."""

    signed: SignedPolicy | None = None
    lines: list[bytes] = field(default_factory=list)
    events: list[Event | None] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    policy_exact: bool = False


MALFORMED = (TranscriptError, ValueError, KeyError, TypeError)


class Lines:
    """The lines of a ``.jsonl`` file read as raw lines (a binary file or ``BytesIO``), as
    ``raw.split(b"\\n")`` without its trailing empty piece. ``problems()`` (after the last
    line) names a missing final newline and every empty line, in that order; ``read`` is
    the number of bytes consumed so far (for progress)."""

    def __init__(self, raw_lines: Iterable[bytes], name: str) -> None:
        self._it, self.name = raw_lines, name
        self.unterminated = False
        self.empty: list[str] = []
        self.read = 0

    def __iter__(self) -> Iterator[bytes]:
        for i, raw in enumerate(self._it):
            self.read += len(raw)
            if raw.endswith(b"\n"):
                ln = raw[:-1]
            else:
                ln, self.unterminated = raw, True
            if not ln:
                self.empty.append(f"{self.name} line {i + 1} is empty")
            yield ln

    def problems(self) -> list[str]:
        head = [f"{self.name} does not end with a newline (truncated write?)"]
        return (head if self.unterminated else []) + self.empty


def _split(raw: bytes, name: str, problems: list[str]) -> list[bytes]:
    lines = Lines(io.BytesIO(raw), name)
    out = list(lines)
    problems.extend(lines.problems())
    return out


def _load(line: bytes, what: str, problems: list[str]) -> tuple[Any, bool]:
    try:
        obj = strict_loads(line)
    except ValueError as exc:
        problems.append(f"{what} is not JSON ({exc})")
        return None, False
    try:
        canonical = canonical_bytes(obj) == line
    except (ValueError, TypeError, RecursionError) as exc:
        # a lone surrogate, an integer beyond 2^53: nothing downstream may re-encode it
        problems.append(f"{what} cannot be canonicalised ({exc})")
        return None, False
    if not canonical:
        problems.append(f"{what} is not RFC 8785 canonical")
    return obj, canonical


def parse_policy(raw: bytes, problems: list[str]) -> tuple[SignedPolicy | None, bool]:
    """The signed policy of ``policy.json`` (None when unreadable) and whether the file is
    exactly its serialisation; defects land in *problems*."""
    obj, _ = _load(raw, "policy.json", problems)
    if obj is None:
        return None, False
    try:
        signed = SignedPolicy.from_json(obj)
    except (FormatError, ValueError, TypeError) as exc:
        problems.append(f"policy.json: {exc}")
        return None, False
    # The signatures are checked over the re-serialised payload, so the file must be
    # exactly that serialisation: no other byte form of policy.json is accepted.
    exact = signed.to_bytes() == raw
    if not exact:
        problems.append("policy.json is not byte for byte the policy it encodes")
    return signed, exact


def parse_event(i: int, ln: bytes, problems: list[str]) -> Event | None:
    """Line *i* of ``events.jsonl`` parsed once (None when it does not parse)."""
    o, canonical = _load(ln, f"events.jsonl line {i + 1}", problems)
    if o is None:
        return None
    try:
        return Event.from_canonical_line(ln, o) if canonical else Event.from_json(o)
    except (FormatError, ValueError, TypeError) as exc:
        problems.append(f"events.jsonl line {i + 1}: {exc}")
        return None


def parse_checkpoints(lines: Iterable[bytes], problems: list[str]) -> Iterator[Checkpoint]:
    """The readable checkpoints of ``checkpoints.jsonl``, one at a time."""
    for i, ln in enumerate(lines):
        o, _ = _load(ln, f"checkpoints.jsonl line {i + 1}", problems)
        if o is not None:
            try:
                yield Checkpoint.from_json(o)
            except (FormatError, ValueError, TypeError) as exc:
                problems.append(f"checkpoints.jsonl line {i + 1}: {exc}")


_TREE_SIZE = re.compile(rb'"tree_size":(0|[1-9][0-9]{0,15})[,}]')


def checkpoint_sizes(raw_lines: Iterable[bytes]) -> set[int]:
    """Every tree size the checkpoints name, found without parsing them (so the event pass
    records roots only there). A size in a non-canonical spelling may be missed; such a
    line fails the canonical check, and its root is reported as not recomputed."""
    out: set[int] = set()
    for raw in raw_lines:
        out.update(int(m) for m in _TREE_SIZE.findall(raw))
    return out


def parse(data: BundleData) -> Parsed:
    """Parse a bundle; never raises, every defect lands in ``problems`` (check canonical)."""
    out = Parsed(problems=list(data.problems))
    out.signed, out.policy_exact = parse_policy(data.policy, out.problems)
    out.lines = _split(data.events, "events.jsonl", out.problems)
    out.events = [parse_event(i, ln, out.problems) for i, ln in enumerate(out.lines)]
    cps = _split(data.checkpoints, "checkpoints.jsonl", out.problems)
    out.checkpoints = list(parse_checkpoints(cps, out.problems))
    return out


def policy_quorum_needed(signed: SignedPolicy, pins: Pins, minimum: int) -> tuple[int, str]:
    """How many pinned super-admins must have signed the policy, and why that many.

    At least 2 whenever the policy's roster or the auditor's pins hold two or more
    super-admins (so dropping the others from a forged roster does not lower it).
    """
    pol = signed.policy
    roster = [e for e in pol.roster if e.role == SUPER_ADMIN and e.valid_at(pol.created_at) is None]
    pinned = pins.with_role(SUPER_ADMIN)
    floor = 2 if max(len(roster), len(pinned)) >= 2 else 1
    need = max(pol.policy_quorum, minimum, floor)
    why = (
        f"the roster has {len(roster)} super-admin{'s' if len(roster) != 1 else ''}, "
        f"{len(pinned)} pinned"
    )
    if need > floor:
        why += f", policy quorum {pol.policy_quorum}, --min-policy-signatures {minimum}"
    return need, why


def check_policy_signatures(
    signed: SignedPolicy,
    pins: Pins,
    minimum: int,
    *,
    exact: bool = True,
    counted: list[str] | None = None,
) -> Result:
    """Count the policy signatures by pinned super-admins who are super-admins in the
    policy's own roster; every other valid signature is ignored, with the reason. A
    signature entry whose key is not in the roster, whose name is not the roster's for that
    key, or that does not verify under it, fails the check. The names that counted are
    appended to *counted* when given."""
    if not pins:
        return ["no trust keys were pinned (--trust)"], []
    pol = signed.policy
    problems: list[str] = []
    if not exact:
        problems.append("policy.json is not the exact signed form of its payload (re-encoded?)")
    data = SignedPolicy.signing_input(pol)
    counted = [] if counted is None else counted
    ignored: list[str] = []
    for s in signed.signatures:
        who = f"{s.signer} ({s.keyid})"
        # Every byte of a signature entry is checked against the policy's own roster, pinned
        # or not: a damaged or forged entry fails, it is never silently ignored.
        r = next((e for e in pol.roster if e.fingerprint == s.keyid), None)
        if r is None:
            problems.append(f"signature entry {who}: its key is not in the policy's roster")
            continue
        if r.name != s.signer:
            problems.append(f"signature entry {who}: the roster names this key {r.name}")
            continue
        if not verify_signature(r.alg, r.public, s.sig, data):
            problems.append(f"signature by {who} does not verify under its roster key")
            continue
        k = pins.by_fingerprint(s.keyid)
        if k is None:
            ignored.append(f"{who}: key not pinned")
            continue
        if not verify_signature(k.alg, k.public, s.sig, data):
            problems.append(f"signature by {who} does not verify under the key pinned for {k.name}")
            continue
        m = next((e for e in pol.roster if e.public == k.public), None)
        if k.role is None:
            why: str | None = "pinned without a role"
        elif k.role != SUPER_ADMIN:
            why = f"pinned as {k.role}, not super-admin"
        elif m is None:
            why = "not in the policy's roster"
        elif m.name != k.name:
            why = f"the roster names this key {m.name}, it is pinned as {k.name}"
        elif m.alg != k.alg:
            why = f"the roster records an {m.alg} key, it is pinned as {k.alg}"
        elif m.role != SUPER_ADMIN:
            why = f"a {m.role} in the policy's roster, not a super-admin"
        else:
            why = m.valid_at(pol.created_at)
        if why is None and k.name in counted:
            why = "signed twice (counted once)"
        if why is not None:
            ignored.append(f"{k.name}: {why}")
        else:
            counted.append(k.name)
    need, reason = policy_quorum_needed(signed, pins, minimum)
    who = f"pinned super-admins {and_list(counted)}" if counted else "no pinned super-admin"
    line = f"policy signed by {who} ({len(counted)}/{need} needed: {reason})"
    notes = [f"ignored {x}" for x in ignored]
    if len(counted) < need:
        problems.append(line)
        problems += notes
        return problems, []
    return problems, [line, *notes]


def check_identities(signed: SignedPolicy, pins: Pins) -> Result:
    """Every roster entry agrees with the auditor's pins (name, key and role)."""
    roster = signed.policy.roster
    problems = pins.identity_problems(roster)
    pinned = [e.name for e in roster if (k := pins.for_entry(e)) and k.name == e.name]
    others = [e.name for e in roster if e.name not in pinned]
    notes = [f"{len(pinned)}/{len(roster)} roster entries pinned ({', '.join(pinned) or 'none'})"]
    if others:
        notes.append(f"not pinned, so counted toward no quorum: {', '.join(others)}")
    return problems, notes


class Dead(Exception):
    """A per-event check met a record it cannot read: the check fails as malformed."""


class EventChecks:
    """Every check that reads the events, fed one line at a time (flat memory).

    ``feed(i, line, ev)`` takes line *i* of ``events.jsonl`` and its parsed event (None when
    it does not parse); ``binding``, ``chain``, ``checkpoints``, ``completeness`` and
    ``artifacts`` then give each check's ``(problems, notes)``. The Merkle tree is an RFC 9162
    frontier that records the root (and the last event's time) only at the tree sizes
    *sizes* the checkpoints name. A check whose input raised records the exception in
    ``dead`` and takes no further events (the verifier reports it as malformed input).
    """

    def __init__(
        self,
        signed: SignedPolicy,
        sizes: set[int],
        artifacts: dict[str, bytes],
        dead: dict[str, BaseException],
    ) -> None:
        self.pol = signed.policy
        self.n = 0
        self.dead = dead
        self.first: Event | None = None
        self.last: Event | None = None
        self.opens: list[int] = []
        self.closes: list[int] = []
        self.bind_p: list[str] = []
        self.chain_p: list[str] = []
        self.head = self.pol.genesis()
        self.last_t: int | None = None
        self.frontier = Frontier()
        self.sizes = sizes
        self.roots: dict[int, bytes] = {0: EMPTY_ROOT}
        self.time_at: dict[int, int | None] = {}
        self.files = artifacts
        self.art_p: list[str] = []
        self.seen: dict[Any, Any] = {}
        self.sigs = 0
        self.kinds: dict[str, int] = {}
        self.bind_cp: list[str] = []
        self.cp_p: list[str] = []
        self.cps = 0
        self.fin: Checkpoint | None = None
        self.prev_size, self.prev_root = 0, EMPTY_ROOT

    def _run(self, cid: str, fn: Callable[..., None], *args: Any) -> None:
        if cid in self.dead:
            return
        try:
            fn(*args)
        except MALFORMED as exc:
            self.dead[cid] = exc

    def feed(self, i: int, ln: bytes, ev: Event | None) -> None:
        if i == 0:
            self.first = ev
        self.last = ev
        self.n = i + 1
        self._run("ceremony-binding", self._binding, ev)
        self._run("chain", self._chain, i, ln, ev)
        self.frontier.append_hash(event_leaf(ln))
        if self.n in self.sizes:
            self.roots[self.n] = self.frontier.root()
            self.time_at[self.n] = ev.time if ev is not None else None
        if ev is not None:
            self.sigs += len(ev.signatures)
            if ev.kind == KIND_CLOSE:
                self.closes.append(ev.seq)
            if ev.kind == "share.issued":
                d = ev.body.get("delivery")
                k = d if isinstance(d, str) else "plain"
                self.kinds[k] = self.kinds.get(k, 0) + 1
            self._run("artifacts", self._artifacts, ev)

    def _binding(self, ev: Event | None) -> None:
        if ev is not None:
            if ev.ceremony != self.pol.ceremony_id:
                self.bind_p.append(f"event {ev.seq} belongs to ceremony {ev.ceremony}")
            if ev.kind == KIND_OPEN:
                self.opens.append(ev.seq)

    def _chain(self, i: int, ln: bytes, ev: Event | None) -> None:
        problems = self.chain_p
        if ev is None:
            problems.append(f"line {i + 1} is unreadable")
        else:
            if ev.seq != i:
                problems.append(f"line {i + 1} carries seq {ev.seq}, expected {i}")
            if ev.prev != self.head:
                problems.append(f"event at line {i + 1} does not link to the previous event")
            if self.last_t is not None and ev.time < self.last_t:
                problems.append(f"event {ev.seq} is earlier than the event before it")
            self.last_t = ev.time
        self.head = chain_hash(ln)

    def _artifacts(self, ev: Event) -> None:
        files, problems, seen = self.files, self.art_p, self.seen
        refs = ev.body.get("artifacts", [])
        if not isinstance(refs, list):
            problems.append(f"event {ev.seq}: artifacts is not a list")
            return
        for r in refs:
            name = r.get("name") if isinstance(r, dict) else None
            digest = r.get("sha256") if isinstance(r, dict) else None
            if not isinstance(name, str) or name not in files:
                problems.append(f"event {ev.seq}: artifact {name!r} is missing")
            elif hashlib.sha256(files[name]).hexdigest() != digest:
                problems.append(f"artifact {name} does not match the digest in event {ev.seq}")
            seen[name] = digest

    # -- the results, after the last event ----------------------------------------------
    def feed_checkpoints(self, rules: Rules, checkpoints: Iterable[Checkpoint]) -> None:
        """The checkpoint pass, one checkpoint at a time (one of look-ahead); the results
        are in ``binding()``, ``checkpoints()`` and ``completeness()``."""
        it = iter(checkpoints)
        cur = next(it, None)
        i = 0
        while cur is not None:
            nxt = next(it, None)
            cp = cur
            if cp.ceremony != self.pol.ceremony_id:
                self.bind_cp.append(
                    f"checkpoint at {cp.tree_size} belongs to ceremony {cp.ceremony}"
                )
            self._run("checkpoints", self._checkpoint, rules, i, cp, nxt is None)
            self.cps, self.fin = i + 1, cp
            cur, i = nxt, i + 1

    def _checkpoint(self, rules: Rules, i: int, cp: Checkpoint, is_last: bool) -> None:
        problems, prev_size, prev_root = self.cp_p, self.prev_size, self.prev_root
        w = f"checkpoint {i + 1} (size {cp.tree_size})"
        if not prev_size < cp.tree_size <= self.n:
            problems.append(f"{w}: size is not after the previous checkpoint within the log")
            return
        root = self.roots.get(cp.tree_size)
        if root is None:  # its size was not found by the scan: a non-canonical line
            problems.append(f"{w}: its root could not be recomputed (unreadable size)")
        elif cp.root != root:
            problems.append(f"{w}: root does not match the events")
        if cp.prev_size != prev_size:
            problems.append(f"{w}: names previous size {cp.prev_size}, expected {prev_size}")
        try:
            verify_consistency(prev_size, cp.tree_size, prev_root, cp.root, cp.consistency)
        except IntegrityError:
            problems.append(f"{w}: not consistent with checkpoint at size {prev_size}")
        if not cp.signatures:
            problems.append(f"{w}: unsigned")
        cid = rules.policy.ceremony_id
        for _cid, msg in rules.check_sigs(w, cp.signatures, cp.signing_input(cid), cp.time):
            problems.append(msg)
        last_t = self.time_at.get(cp.tree_size)
        if last_t is not None and cp.time < last_t:
            problems.append(f"{w}: dated before the events it covers")
        if cp.time < rules.policy.created_at:
            problems.append(f"{w}: dated before the policy was created")
        if cp.final and not is_last:
            problems.append(f"{w}: a final checkpoint is followed by another")
        self.prev_size, self.prev_root = cp.tree_size, cp.root

    # -- the results, after the last event and checkpoint ----------------------------------
    def binding(self) -> Result:
        pol, problems = self.pol, [*self.bind_p, *self.bind_cp]
        first = self.first
        if first is None:
            problems.append("no readable ceremony.open event")
        else:
            if first.kind != KIND_OPEN:
                problems.append("the first event is not ceremony.open")
            if first.prev != pol.genesis():
                problems.append("the first event does not link to this policy (genesis hash)")
            if first.body.get("policy_digest") != pol.digest().hex():
                problems.append("the open event names a different policy digest")
        if len(self.opens) > 1:
            problems.append(f"ceremony.open recorded more than once (events {self.opens})")
        return problems, [f"ceremony {pol.ceremony_id} ({pol.kind}: {pol.purpose})"]

    def chain(self) -> Result:
        return self.chain_p, [f"{self.n} events linked from the policy genesis"]

    def checkpoints(self) -> Result:
        return self.cp_p, [f"{self.cps} checkpoints, last at size {self.prev_size}"]

    def completeness(self, rules: Rules) -> Result:
        pol, problems, n, fin = rules.policy, [], self.n, self.fin
        last = self.last
        if last is None or last.kind != KIND_CLOSE:
            problems.append(
                "the transcript does not end with ceremony.close (truncated or unfinished)"
            )
        if len(self.closes) > 1:
            problems.append(f"ceremony.close recorded more than once (events {self.closes})")
        if fin is None or not fin.final or fin.tree_size != n:
            problems.append(f"no final checkpoint covering all {n} events")
        else:
            for role, k in pol.close_quorum.items():
                have: set[str] = set()
                ignored: list[str] = []
                for s in fin.signatures:
                    m = pol.member(s.signer)
                    if m is None or m.role != role:
                        continue
                    why = rules.counts(m, role)
                    if why is None:
                        have.add(s.signer)
                    else:
                        ignored.append(f"{s.signer} ({why})")
                if len(have) < k:
                    problems.append(
                        f"final checkpoint signed by {len(have)}/{k} {plural(role, k)}"
                        f" ({', '.join(sorted(have)) or 'none'})"
                        + (f"; ignored: {', '.join(ignored)}" if ignored else "")
                    )
        outcome = last.body.get("outcome") if last is not None else None
        return problems, [f"{n} events, closed with outcome {outcome}"]

    def artifacts(self) -> Result:
        problems = list(self.art_p)
        for name in self.files:
            if name not in self.seen:
                problems.append(f"artifact {name} is not bound by any event")
        return problems, [f"{len(self.seen)} artifacts bound by digest"]


@dataclass(frozen=True, slots=True)
class Summary:
    """What the next ceremony's ``prev-link`` check needs of a bundle."""

    signed: SignedPolicy | None
    lines: int
    last_event: Event | None
    last_checkpoint: Checkpoint | None

    @classmethod
    def of(cls, p: Parsed) -> Summary:
        return cls(
            p.signed,
            len(p.lines),
            p.events[-1] if p.events else None,
            p.checkpoints[-1] if p.checkpoints else None,
        )


def final_checkpoint(p: Summary) -> Checkpoint | None:
    """The last checkpoint when it is final and covers every event, else None."""
    fin = p.last_checkpoint
    if fin is None or not fin.final or fin.tree_size != p.lines:
        return None
    return fin


def check_prev_link(signed: SignedPolicy, prev: Summary | None, prev_ok: bool | None) -> Result:
    """This policy's ``prev_checkpoint`` names the final checkpoint of the previous bundle
    (a completed ceremony that verifies, closed before this one was created)."""
    pol = signed.policy
    link = pol.prev_checkpoint
    if prev is None:
        if link is None:
            return [], ["the first ceremony of its chain (no prev_checkpoint)"]
        return [], [
            f"links to ceremony {link['ceremony']} at size {link['tree_size']}; "
            "not checked (give the previous bundle with --prev)"
        ]
    if prev.signed is None:
        return ["the previous bundle's policy.json is unreadable"], []
    problems: list[str] = []
    pid = prev.signed.policy.ceremony_id
    fin = final_checkpoint(prev)
    if fin is None:
        return [f"the previous bundle ({pid}) has no final checkpoint covering its events"], []
    want = {"ceremony": pid, "tree_size": fin.tree_size, "root": fin.root.hex()}
    if link is None:
        problems.append(f"no prev_checkpoint, but the previous ceremony is {pid}")
    elif dict(link) != want:
        problems.append(
            f"prev_checkpoint names ceremony {link['ceremony']} at size {link['tree_size']} "
            f"root {link['root']}, but the previous bundle ends at ceremony {pid} size "
            f"{fin.tree_size} root {fin.root.hex()}: a fork or another history"
        )
    last = prev.last_event
    outcome = last.body.get("outcome") if last is not None else None
    if outcome != "completed":
        problems.append(f"the previous ceremony {pid} did not complete (outcome {outcome!r})")
    if fin.time > pol.created_at:
        problems.append(
            f"this ceremony was created at {pol.created_at}, before the previous one closed "
            f"({fin.time})"
        )
    if prev_ok is False:
        problems.append(f"the previous bundle ({pid}) does not verify against your pins")
    return problems, [] if problems else [f"follows ceremony {pid} at size {fin.tree_size}"]
