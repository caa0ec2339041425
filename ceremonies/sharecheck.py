"""The one share checker: a typed :class:`ShareSet` and the checks every front end uses.

A share handed in is checked against the share set the waiting step collects (the
deployment's active set, or the new set in a generate/reshare verification round):

* :func:`verify` is THE check. The runner runs it on every share before combining
  (:mod:`ceremonies.runner.steps.handin`, ``CeremonyRunner.check_share``): the envelope's
  signature by the pinned dealer key, its ceremony and epoch, the holder at the share's
  (group, member), the commitment recorded by the generating ceremony, and one share per
  custodian. It returns a :class:`Verified` share or raises :class:`Rejected`.
* :func:`check_typed` is the same check for a share as a custodian types it (the ceremony
  session, :mod:`ceremonies.session`): word by word first (unknown words, a unique
  4-letter prefix, SLIP-0039), then length and the RS1024 checksum located at the word,
  then membership of the set by commitment (a share of another set or a retired epoch is
  named as such before its envelope is given), and then :func:`verify`. It never raises
  for a bad share; it returns a :class:`LiveCheck`.
* :func:`quorum_of` gives the progress per group of the shares that passed.

Pure functions over public facts: nothing here opens the store or the token.
Secrets: typed words live only in :class:`WordState` (``repr=False``) and the caller's text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from custody.errors import ShareError
from custody.shares import slip39
from custody.shares.envelope import (
    EnvelopeError,
    SignedEnvelope,
    commitment,
    load_envelope,
    verify_share,
)

# ------------------------------------------------------------------------------ the set


@dataclass(frozen=True, slots=True, kw_only=True)
class Holder:
    """The custodian holding the share at one (group, member) of a set (public)."""

    name: str
    fingerprint: str
    commitment: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RetiredSet:
    """A retired share set, by its commitments (to name a share of an old epoch)."""

    epoch: int
    ceremony_id: str
    commitments: Mapping[tuple[int, int], str]  # 0-based (group, member) -> commitment


@dataclass(frozen=True, slots=True, kw_only=True)
class ShareSet:
    """The public facts a share is checked against. Indexes are 0-based."""

    epoch: int
    ceremony_id: str
    dealer: bytes
    scheme: Mapping[str, Any]
    holders: Mapping[tuple[int, int], Holder]
    rk_kcv: str = ""
    retired: tuple[RetiredSet, ...] = ()
    dealer_alg: str = "ed25519"  # the dealer's enrolled algorithm; envelopes verify under it

    @classmethod
    def of(cls, d: Mapping[str, Any], retired: Iterable[RetiredSet] = ()) -> ShareSet:
        """The typed set of the runner's share-set mapping (``active_share_set``, or a
        generate/reshare's new set)."""
        return cls(
            epoch=int(d["epoch"]),
            ceremony_id=str(d["ceremony_id"]),
            dealer=bytes(d["dealer"]),
            scheme=d["scheme"],
            holders={
                (int(g), int(m)): h
                if isinstance(h, Holder)
                else Holder(
                    name=str(h["name"]),
                    fingerprint=str(h["fingerprint"]),
                    commitment=str(h["commitment"]),
                )
                for (g, m), h in d["holders"].items()
            },
            rk_kcv=str(d.get("rk_kcv") or ""),
            retired=tuple(retired),
            dealer_alg=str(d.get("dealer_alg") or "ed25519"),
        )

    def roster(self) -> dict[str, str]:
        """Holder names by fingerprint."""
        return {h.fingerprint: h.name for h in self.holders.values()}


# ---------------------------------------------------------------------------- the check


@dataclass(frozen=True, slots=True)
class Verified:
    """A share that passed :func:`verify` (holds the parsed share: keep it short-lived)."""

    custodian: str
    parsed: slip39.ParsedShare = field(repr=False)
    envelope: SignedEnvelope = field(repr=False)


class Rejected(Exception):
    """A share refused by :func:`verify`: its source, its custodian as far as known, and
    the ShareError."""

    def __init__(self, source: str, custodian: str | None, error: ShareError) -> None:
        super().__init__(custodian or source)
        self.source, self.custodian, self.error = source, custodian, error

    @property
    def who(self) -> str:
        return self.custodian or self.source

    @property
    def reason(self) -> str:
        return getattr(self.error, "reason", None) or type(self.error).__name__


def verify(
    source: str,
    text: str,
    envelope: bytes,
    sset: ShareSet,
    roster: Mapping[str, str],
    names: set[str] | frozenset[str] = frozenset(),
) -> Verified:
    """Verify one share against its envelope and *sset* (ceremony, epoch, holder and the
    recorded commitment), before any combining. *roster* names custodians by fingerprint;
    *names* are the custodians already counted (a second share of one of them is
    ``duplicate-custodian``).

    Raises:
        Rejected: wrapping the ShareError, with the custodian named as far as known.
    """
    custodian: str | None = None
    try:
        env = load_envelope(envelope)
        custodian = roster.get(env.payload.custodian)
        parsed = slip39.parse_share(text, label=custodian or source)
        verify_share(
            parsed,
            env,
            sset.dealer,
            alg=sset.dealer_alg,
            expected_ceremony=sset.ceremony_id,
            expected_epoch=sset.epoch,
        )
        h = sset.holders.get((parsed.group_index, parsed.member_index))
        if h is None or h.fingerprint != env.payload.custodian:
            raise EnvelopeError(
                "The share was not issued to this custodian",
                "Use your own share.",
                reason="wrong-custodian",
            )
        if h.commitment != env.payload.commitment:
            raise EnvelopeError(
                "The envelope's commitment differs from the generation transcript",
                "Do not use this share.",
                reason="commitment-mismatch",
            )
        custodian = h.name
        if custodian in names:
            raise EnvelopeError(
                f"{custodian} already handed in a share",
                "One share per custodian is counted.",
                reason="duplicate-custodian",
            )
    except ShareError as exc:
        raise Rejected(source, custodian, exc) from exc
    return Verified(custodian, parsed, env)


# ------------------------------------------------------------------- a share as typed


@dataclass(frozen=True, slots=True, kw_only=True)
class WordState:
    """One typed word: what was typed (secret), what it expands to, and its error."""

    position: int
    typed: str = field(repr=False)
    word: str | None = field(default=None, repr=False)
    error: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class LiveCheck:
    """The check of one share as typed. ``status``: incomplete | ok | rejected."""

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


def check_words(text: str) -> tuple[WordState, ...]:
    """Expand each typed word (a unique 4-letter prefix is enough, SLIP-0039) and flag
    unknown or too-short ones. The word being typed (no trailing space) is not flagged
    while it is still a prefix of some word."""
    toks = text.split()
    out = []
    for i, tok in enumerate(toks, start=1):
        last_open = i == len(toks) and not text[-1:].isspace()
        try:
            word = slip39.expand_words(tok, label="share")[0]
            out.append(WordState(position=i, typed=tok, word=word))
        except slip39.ShareWordError:
            if last_open and len(tok) < 4 and _is_prefix(tok):
                out.append(WordState(position=i, typed=tok))
                continue
            why = "too short" if len(tok) < 4 and _is_prefix(tok) else "unknown word"
            out.append(WordState(position=i, typed=tok, error=why))
    return tuple(out)


def _is_prefix(tok: str) -> bool:
    t = tok.lower()
    return any(w.startswith(t) for w in slip39.WORDLIST)


def complete_word(tok: str) -> str | None:
    """The word a typed prefix stands for, once it is unique (else None)."""
    t = tok.lower()
    if len(t) < 2:
        return None
    hits = [w for w in slip39.WORDLIST if w.startswith(t)]
    return hits[0] if len(hits) == 1 else None


def full_text(text: str) -> str:
    """The share's words with typed prefixes expanded (what is handed to the runner)."""
    return " ".join(w.word or w.typed for w in check_words(text))


def check_typed(source: str, text: str, envelope: bytes | None, sset: ShareSet | None) -> LiveCheck:
    """Check one share as typed, before it is counted. Never raises for a bad share.

    Order: words (unknown, at the word), length and RS1024 checksum (located at the word
    when one word is wrong), membership of the share set by commitment (wrong set or
    epoch), then the envelope: :func:`verify`, the runner's own check.
    """
    ws = check_words(text)
    bad = tuple((w.position, w.error) for w in ws if w.error)
    if bad:
        return LiveCheck(
            source=source,
            status="rejected",
            word_errors=bad,
            reason="; ".join(f"word {p}: {e}" for p, e in bad),
        )
    if len(ws) not in (20, 33) or (not text[-1:].isspace() and len(ws) < 20):
        return LiveCheck(
            source=source, status="incomplete", reason=f"{len(ws)} of 20 (or 33) words"
        )
    words = " ".join(w.word or "" for w in ws)
    try:
        parsed = slip39.parse_share(words, label=source)
    except slip39.ShareDiagnostic as exc:
        pos = getattr(exc, "position", None)
        why = "checksum fails" if isinstance(exc, slip39.ShareChecksumError) else exc.title
        errs = ((pos, "checksum fails here"),) if pos else ()
        return LiveCheck(
            source=source,
            status="rejected",
            word_errors=errs,
            custodian=_named(envelope, sset),
            reason=f"{why}" + (f" (word {pos} is wrong)" if pos else ""),
        )
    g, m = parsed.group_index, parsed.member_index
    base: dict[str, Any] = {"source": source, "group": g + 1, "member": m + 1}
    if sset is None:
        return LiveCheck(status="ok", **base)
    holder = sset.holders.get((g, m))
    mine = commitment(parsed, ceremony_id=sset.ceremony_id, epoch=sset.epoch).hex()
    if holder is None or holder.commitment != mine:
        for old in sset.retired:
            theirs = commitment(parsed, ceremony_id=old.ceremony_id, epoch=old.epoch).hex()
            if old.commitments.get((g, m)) == theirs:
                return LiveCheck(
                    status="rejected",
                    reason=f"wrong epoch: from retired epoch {old.epoch}, "
                    f"the current one is {sset.epoch}",
                    **base,
                )
        return LiveCheck(
            status="rejected",
            reason=f"wrong set: not a share of the current share set (epoch {sset.epoch})",
            **base,
        )
    if envelope is None:
        return LiveCheck(
            status="incomplete",
            custodian=holder.name,
            reason="matches the share set; now give its envelope (QR text)",
            **base,
        )
    try:
        v = verify(source, words, envelope, sset, sset.roster())
    except Rejected as rej:
        return LiveCheck(
            status="rejected",
            custodian=rej.custodian or holder.name,
            reason=rej.error.title,
            **base,
        )
    return LiveCheck(status="ok", custodian=v.custodian, **base)


def _named(envelope: bytes | None, sset: ShareSet | None) -> str:
    """The custodian an envelope names (by fingerprint in the share set), or ""."""
    if envelope is None or sset is None:
        return ""
    try:
        fp = load_envelope(envelope).payload.custodian
    except ShareError:
        return ""
    return sset.roster().get(fp, "")


# ------------------------------------------------------------------------------ quorum


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

    def progress(self) -> str:
        """Per group, as a custodian reads it: ``group 1: 2 of 3; group 2: 0 of 2`` (and,
        with several groups, how many groups are met of those needed)."""
        parts = [f"group {i}: {g.have} of {g.need}" for i, g in enumerate(self.groups, start=1)]
        if len(self.groups) > 1:
            parts.append(f"groups met: {self.groups_met} of {self.group_threshold}")
        return "; ".join(parts)

    def describe(self) -> str:
        parts = [f"{g.label} {g.have}/{g.need}" for g in self.groups]
        if len(self.groups) > 1:
            parts.append(f"groups {self.groups_met}/{self.group_threshold}")
        return ", ".join(parts)


def quorum_of(sset: ShareSet, checks: Sequence[LiveCheck]) -> QuorumView:
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


__all__ = [
    "GroupProgress",
    "Holder",
    "LiveCheck",
    "QuorumView",
    "Rejected",
    "RetiredSet",
    "ShareSet",
    "Verified",
    "WordState",
    "check_typed",
    "check_words",
    "complete_word",
    "full_text",
    "quorum_of",
    "verify",
]
