"""Live checks of a share as a custodian types it, before it is counted.

Owns the word-level checks (unknown word, a unique 4-letter prefix, SLIP-0039), the share
check (length, RS1024 checksum located at the word, membership of the share set by
commitment, so another set or epoch is named as such, then the envelope against the
pinned dealer key), and the quorum progress per group. Pure functions: the screens and
:mod:`tui.services.ceremony` call them with public share-set facts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from custody.errors import ShareError


@dataclass(frozen=True, slots=True, kw_only=True)
class WordState:
    """One typed word: what was typed (secret), what it expands to, and its error."""

    position: int
    typed: str = field(repr=False)
    word: str | None = field(default=None, repr=False)
    error: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ShareCheck:
    """The live check of one share. ``status``: incomplete | ok | rejected."""

    source: str
    status: str
    reason: str = ""
    custodian: str = ""
    group: int | None = None  # 1-based
    member: int | None = None
    word_errors: tuple[tuple[int, str], ...] = ()  # (1-based position, error)

    def line(self) -> str:
        who = self.custodian or self.source
        where = f" (group {self.group}, member {self.member})" if self.group else ""
        if self.status == "ok":
            return f"{who}{where}: ok"
        return f"{who}{where}: {self.status}" + (f": {self.reason}" if self.reason else "")


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupProgress:
    label: str
    have: int
    need: int

    @property
    def met(self) -> bool:
        return self.have >= self.need


@dataclass(frozen=True, slots=True, kw_only=True)
class QuorumView:
    groups: tuple[GroupProgress, ...]
    group_threshold: int

    @property
    def groups_met(self) -> int:
        return sum(1 for g in self.groups if g.met)

    @property
    def met(self) -> bool:
        return self.groups_met >= self.group_threshold

    def describe(self) -> str:
        parts = [f"{g.label} {g.have}/{g.need}" for g in self.groups]
        if len(self.groups) > 1:
            parts.append(f"groups {self.groups_met}/{self.group_threshold}")
        return ", ".join(parts)


def check_words(text: str) -> tuple[WordState, ...]:
    """Expand each typed word (a unique 4-letter prefix is enough, SLIP-0039) and flag
    unknown or too-short ones. The word being typed (no trailing space) is not flagged
    while it is still a prefix of some word."""
    from custody.shares.slip39 import ShareWordError, expand_words

    toks = text.split()
    out = []
    for i, tok in enumerate(toks, start=1):
        last_open = i == len(toks) and not text[-1:].isspace()
        try:
            word = expand_words(tok, label="share")[0]
            out.append(WordState(position=i, typed=tok, word=word))
        except ShareWordError:
            if last_open and len(tok) < 4 and _is_prefix(tok):
                out.append(WordState(position=i, typed=tok))
                continue
            why = "too short" if len(tok) < 4 and _is_prefix(tok) else "unknown word"
            out.append(WordState(position=i, typed=tok, error=why))
    return tuple(out)


def _is_prefix(tok: str) -> bool:
    from custody.shares.slip39 import WORDLIST  # type: ignore[attr-defined]

    t = tok.lower()
    return any(w.startswith(t) for w in WORDLIST)


def complete_word(tok: str) -> str | None:
    """The word a typed prefix stands for, once it is unique (else None)."""
    from custody.shares.slip39 import WORDLIST  # type: ignore[attr-defined]

    t = tok.lower()
    if len(t) < 2:
        return None
    hits = [w for w in WORDLIST if w.startswith(t)]
    return hits[0] if len(hits) == 1 else None


@dataclass(frozen=True, slots=True, kw_only=True)
class ShareSet:
    """The public facts a share is checked against (store or a ceremony's new set)."""

    epoch: int
    ceremony_id: str
    dealer: bytes
    scheme: dict[str, Any]
    holders: dict[tuple[int, int], dict[str, str]]
    retired: tuple[
        tuple[int, str, dict[tuple[int, int], str]], ...
    ] = ()  # (epoch, cid, idx->commitment)


def check_share(
    source: str, text: str, envelope: bytes | None, sset: ShareSet | None
) -> ShareCheck:
    """Check one share before it is counted. Never raises for a bad share.

    Order: words (unknown, at the word), length and RS1024 checksum (located at the word
    when one word is wrong), membership of the share set by commitment (wrong set or
    epoch), then the envelope (signature, ceremony, epoch, commitment, custodian).
    """
    from custody.shares import slip39
    from custody.shares.envelope import commitment, load_envelope, verify_share

    ws = check_words(text)
    bad = tuple((w.position, w.error) for w in ws if w.error)
    if bad:
        return ShareCheck(
            source=source,
            status="rejected",
            word_errors=bad,
            reason="; ".join(f"word {p}: {e}" for p, e in bad),
        )
    if len(ws) not in (20, 33) or (not text[-1:].isspace() and len(ws) < 20):
        return ShareCheck(
            source=source, status="incomplete", reason=f"{len(ws)} of 20 (or 33) words"
        )
    try:
        parsed = slip39.parse_share(" ".join(w.word or "" for w in ws), label=source)
    except slip39.ShareDiagnostic as exc:
        pos = getattr(exc, "position", None)
        why = "checksum fails" if isinstance(exc, slip39.ShareChecksumError) else exc.title
        errs = ((pos, "checksum fails here"),) if pos else ()
        return ShareCheck(
            source=source,
            status="rejected",
            word_errors=errs,
            custodian=_named(envelope, sset),
            reason=f"{why}" + (f" (word {pos} is wrong)" if pos else ""),
        )
    g, m = parsed.group_index, parsed.member_index
    base: dict[str, Any] = {"source": source, "group": g + 1, "member": m + 1}
    if sset is None:
        return ShareCheck(status="ok", **base)
    holder = sset.holders.get((g, m))
    mine = commitment(parsed, ceremony_id=sset.ceremony_id, epoch=sset.epoch).hex()
    if holder is None or holder["commitment"] != mine:
        for ep, cid, commits in sset.retired:
            if commits.get((g, m)) == commitment(parsed, ceremony_id=cid, epoch=ep).hex():
                return ShareCheck(
                    status="rejected",
                    reason=f"wrong epoch: from retired epoch {ep}, the current one is {sset.epoch}",
                    **base,
                )
        return ShareCheck(
            status="rejected",
            reason=f"wrong set: not a share of the current share set (epoch {sset.epoch})",
            **base,
        )
    name = holder["name"]
    if envelope is None:
        return ShareCheck(
            status="incomplete",
            custodian=name,
            reason="matches the share set; now give its envelope (QR text)",
            **base,
        )
    try:
        env = load_envelope(envelope)
        verify_share(
            parsed, env, sset.dealer, expected_ceremony=sset.ceremony_id, expected_epoch=sset.epoch
        )
        if env.payload.custodian != holder["fingerprint"]:
            return ShareCheck(
                status="rejected",
                custodian=name,
                reason="the envelope was issued to another custodian",
                **base,
            )
    except ShareError as exc:
        return ShareCheck(status="rejected", custodian=name, reason=exc.title, **base)
    return ShareCheck(status="ok", custodian=name, **base)


def _named(envelope: bytes | None, sset: ShareSet | None) -> str:
    """The custodian an envelope names (by fingerprint in the share set), or ""."""
    from custody.shares.envelope import load_envelope

    if envelope is None or sset is None:
        return ""
    try:
        fp = load_envelope(envelope).payload.custodian
    except ShareError:
        return ""
    return next((h["name"] for h in sset.holders.values() if h["fingerprint"] == fp), "")


def quorum_of(sset: ShareSet, checks: Sequence[ShareCheck]) -> QuorumView:
    """Progress per group from the shares that passed, by distinct (group, member)."""
    groups = sset.scheme["groups"]
    have: dict[int, set[int]] = {}
    for c in checks:
        if c.status == "ok" and c.group is not None and c.member is not None:
            have.setdefault(c.group, set()).add(c.member)

    def label(i: int) -> str:
        return "Custodians" if len(groups) == 1 else f"Group {i}"

    return QuorumView(
        groups=tuple(
            GroupProgress(label=label(i), have=len(have.get(i, ())), need=t)
            for i, (t, _n) in enumerate(groups, start=1)
        ),
        group_threshold=int(sset.scheme["group_threshold"]),
    )
