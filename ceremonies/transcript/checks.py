"""Structural checks of a bundle: parsing/canonical form, policy signatures against the
auditor's pins, roster identities, ceremony binding, the hash chain, Merkle checkpoints,
completeness, artifacts and the link to the previous ceremony.

Each function is pure: it takes parsed data and returns ``(problems, notes)`` for one
check id. The authority checks (signatures, roles, quorum, script...) live in
:mod:`ceremonies.transcript.rules`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from custody.audit.merkle import MerkleTree, verify_consistency
from custody.audit.signers import verify_signature
from custody.canonical import canonical_bytes, strict_loads
from custody.errors import IntegrityError

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


def _split(raw: bytes, name: str, problems: list[str]) -> list[bytes]:
    if not raw:
        return []
    if not raw.endswith(b"\n"):
        problems.append(f"{name} does not end with a newline (truncated write?)")
    lines = raw.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    for i, ln in enumerate(lines):
        if not ln:
            problems.append(f"{name} line {i + 1} is empty")
    return lines


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


def parse(data: BundleData) -> Parsed:
    """Parse a bundle; never raises, every defect lands in ``problems`` (check canonical)."""
    out = Parsed(problems=list(data.problems))
    obj, _ = _load(data.policy, "policy.json", out.problems)
    if obj is not None:
        try:
            out.signed = SignedPolicy.from_json(obj)
        except (FormatError, ValueError, TypeError) as exc:
            out.problems.append(f"policy.json: {exc}")
        else:
            # The signatures are checked over the re-serialised payload, so the file must
            # be exactly that serialisation: no other byte form of policy.json is accepted.
            out.policy_exact = out.signed.to_bytes() == data.policy
            if not out.policy_exact:
                out.problems.append("policy.json is not byte for byte the policy it encodes")
    out.lines = _split(data.events, "events.jsonl", out.problems)
    for i, ln in enumerate(out.lines):
        ev = None
        o, canonical = _load(ln, f"events.jsonl line {i + 1}", out.problems)
        if o is not None:
            try:
                ev = Event.from_canonical_line(ln, o) if canonical else Event.from_json(o)
            except (FormatError, ValueError, TypeError) as exc:
                out.problems.append(f"events.jsonl line {i + 1}: {exc}")
        out.events.append(ev)
    for i, ln in enumerate(_split(data.checkpoints, "checkpoints.jsonl", out.problems)):
        o, _ = _load(ln, f"checkpoints.jsonl line {i + 1}", out.problems)
        if o is not None:
            try:
                out.checkpoints.append(Checkpoint.from_json(o))
            except (FormatError, ValueError, TypeError) as exc:
                out.problems.append(f"checkpoints.jsonl line {i + 1}: {exc}")
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
    pinned = [e.name for e in roster if (k := pins.by_key(e.public)) and k.name == e.name]
    others = [e.name for e in roster if e.name not in pinned]
    notes = [f"{len(pinned)}/{len(roster)} roster entries pinned ({', '.join(pinned) or 'none'})"]
    if others:
        notes.append(f"not pinned, so counted toward no quorum: {', '.join(others)}")
    return problems, notes


def check_binding(signed: SignedPolicy, p: Parsed) -> Result:
    pol, problems = signed.policy, []
    for ev in p.events:
        if ev is not None and ev.ceremony != pol.ceremony_id:
            problems.append(f"event {ev.seq} belongs to ceremony {ev.ceremony}")
    for cp in p.checkpoints:
        if cp.ceremony != pol.ceremony_id:
            problems.append(f"checkpoint at {cp.tree_size} belongs to ceremony {cp.ceremony}")
    first = p.events[0] if p.events else None
    if first is None:
        problems.append("no readable ceremony.open event")
    else:
        if first.kind != KIND_OPEN:
            problems.append("the first event is not ceremony.open")
        if first.prev != pol.genesis():
            problems.append("the first event does not link to this policy (genesis hash)")
        if first.body.get("policy_digest") != pol.digest().hex():
            problems.append("the open event names a different policy digest")
    opens = [e.seq for e in p.events if e is not None and e.kind == KIND_OPEN]
    if len(opens) > 1:
        problems.append(f"ceremony.open recorded more than once (events {opens})")
    return problems, [f"ceremony {pol.ceremony_id} ({pol.kind}: {pol.purpose})"]


def check_chain(signed: SignedPolicy, p: Parsed) -> Result:
    problems = []
    head, last_t = signed.policy.genesis(), None
    # parse() appends one event (or None) per line, so the lengths always agree.
    for i, (ln, ev) in enumerate(zip(p.lines, p.events, strict=True)):
        if ev is None:
            problems.append(f"line {i + 1} is unreadable")
        else:
            if ev.seq != i:
                problems.append(f"line {i + 1} carries seq {ev.seq}, expected {i}")
            if ev.prev != head:
                problems.append(f"event at line {i + 1} does not link to the previous event")
            if last_t is not None and ev.time < last_t:
                problems.append(f"event {ev.seq} is earlier than the event before it")
            last_t = ev.time
        head = chain_hash(ln)
    return problems, [f"{len(p.lines)} events linked from the policy genesis"]


def check_checkpoints(rules: Rules, p: Parsed) -> Result:
    cid = rules.policy.ceremony_id
    tree = MerkleTree(event_leaf(ln) for ln in p.lines)
    problems: list[str] = []
    prev_size, prev_root = 0, tree.root(0)
    for i, cp in enumerate(p.checkpoints):
        w = f"checkpoint {i + 1} (size {cp.tree_size})"
        if not prev_size < cp.tree_size <= tree.size:
            problems.append(f"{w}: size is not after the previous checkpoint within the log")
            continue
        if cp.root != tree.root(cp.tree_size):
            problems.append(f"{w}: root does not match the events")
        if cp.prev_size != prev_size:
            problems.append(f"{w}: names previous size {cp.prev_size}, expected {prev_size}")
        try:
            verify_consistency(prev_size, cp.tree_size, prev_root, cp.root, cp.consistency)
        except IntegrityError:
            problems.append(f"{w}: not consistent with checkpoint at size {prev_size}")
        if not cp.signatures:
            problems.append(f"{w}: unsigned")
        for _cid, msg in rules.check_sigs(w, cp.signatures, cp.signing_input(cid), cp.time):
            problems.append(msg)
        last = p.events[cp.tree_size - 1]
        if last is not None and cp.time < last.time:
            problems.append(f"{w}: dated before the events it covers")
        if cp.time < rules.policy.created_at:
            problems.append(f"{w}: dated before the policy was created")
        if cp.final and i != len(p.checkpoints) - 1:
            problems.append(f"{w}: a final checkpoint is followed by another")
        prev_size, prev_root = cp.tree_size, cp.root
    return problems, [f"{len(p.checkpoints)} checkpoints, last at size {prev_size}"]


def check_completeness(rules: Rules, p: Parsed) -> Result:
    pol, problems = rules.policy, []
    n = len(p.events)
    closes = [e.seq for e in p.events if e is not None and e.kind == KIND_CLOSE]
    last = p.events[-1] if p.events else None
    if last is None or last.kind != KIND_CLOSE:
        problems.append("the transcript does not end with ceremony.close (truncated or unfinished)")
    if len(closes) > 1:
        problems.append(f"ceremony.close recorded more than once (events {closes})")
    fin = p.checkpoints[-1] if p.checkpoints else None
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


def check_artifacts(data: BundleData, p: Parsed) -> Result:
    files, problems, seen = data.artifact_map(), [], {}
    for ev in p.events:
        if ev is None:  # an unparsable line: reported by the event checks, binds nothing
            continue
        refs = ev.body.get("artifacts", [])
        if not isinstance(refs, list):
            problems.append(f"event {ev.seq}: artifacts is not a list")
            continue
        for r in refs:
            name = r.get("name") if isinstance(r, dict) else None
            digest = r.get("sha256") if isinstance(r, dict) else None
            if not isinstance(name, str) or name not in files:
                problems.append(f"event {ev.seq}: artifact {name!r} is missing")
            elif hashlib.sha256(files[name]).hexdigest() != digest:
                problems.append(f"artifact {name} does not match the digest in event {ev.seq}")
            seen[name] = digest
    for name in files:
        if name not in seen:
            problems.append(f"artifact {name} is not bound by any event")
    return problems, [f"{len(seen)} artifacts bound by digest"]


def final_checkpoint(p: Parsed) -> Checkpoint | None:
    """The last checkpoint when it is final and covers every event, else None."""
    fin = p.checkpoints[-1] if p.checkpoints else None
    if fin is None or not fin.final or fin.tree_size != len(p.lines):
        return None
    return fin


def check_prev_link(signed: SignedPolicy, prev: Parsed | None, prev_ok: bool | None) -> Result:
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
    last = prev.events[-1] if prev.events else None
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
