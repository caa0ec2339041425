"""Reading one SLIP-0039 share, with a precise diagnosis of what is wrong with it.

The per-share half of :mod:`custody.shares.slip39` (which re-exports these names):

- word entry by unique 4-letter prefix (SLIP-0039: "the first four letters ... uniquely
  determine the word");
- one typed :class:`~custody.errors.ShareError` subclass per failure, naming the share by
  its label ("share 3", ``file:line``) and, where it can be found, the word position; a
  single wrong word is located by solving the RS1024 checksum for one error (the code has
  distance 4, so a single-word error has exactly one position).

No title or hint ever contains share words.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

from shamir_mnemonic import rs1024
from shamir_mnemonic.constants import (
    CUSTOMIZATION_STRING_EXTENDABLE,
    CUSTOMIZATION_STRING_ORIG,
    METADATA_LENGTH_WORDS,
    MIN_MNEMONIC_LENGTH_WORDS,
)
from shamir_mnemonic.share import Share
from shamir_mnemonic.utils import MnemonicError
from shamir_mnemonic.wordlist import WORD_INDEX_MAP, WORDLIST

from custody.errors import ShareError

_PREFIX: dict[str, str] = {w[:4]: w for w in WORDLIST}  # SLIP-0039: 4-letter prefixes are unique


class ShareDiagnostic(ShareError):
    """A share-level failure. ``share`` is the label of the culprit (None: the whole set),
    ``position`` the 1-based word position when known."""

    def __init__(
        self, title: str, hint: str = "", *, share: str | None = None, position: int | None = None
    ) -> None:
        super().__init__(title, hint)
        self.share = share
        self.position = position


class ShareWordError(ShareDiagnostic):
    """A word is not in the SLIP-0039 list (or is too short to be a prefix)."""


class ShareLengthError(ShareDiagnostic):
    """The share has a wrong number of words or invalid padding."""


class ShareChecksumError(ShareDiagnostic):
    """The RS1024 checksum fails."""


class ShareSetMismatch(ShareDiagnostic):
    """Shares come from different splits (identifier / iteration exponent / extendable)."""


class ShareGroupMismatch(ShareDiagnostic):
    """Shares disagree on group threshold, group count or member threshold."""


class DuplicateShareIndex(ShareDiagnostic):
    """Two shares carry the same group and member index."""


class InsufficientShares(ShareDiagnostic):
    """Not enough shares (or groups) to reach the thresholds."""


class ShareDigestError(ShareDiagnostic):
    """The shares combine, but the SLIP-0039 digest does not verify: a share is wrong."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ParsedShare:
    """One decoded share. ``mnemonic`` is normalised (full lower-case words, one space)."""

    label: str
    mnemonic: str = field(repr=False)
    share: Share = field(repr=False)

    @property
    def identifier(self) -> int:
        return self.share.identifier

    @property
    def group_index(self) -> int:
        return self.share.group_index

    @property
    def member_index(self) -> int:
        return self.share.index

    @property
    def member_threshold(self) -> int:
        return self.share.member_threshold

    @property
    def group_threshold(self) -> int:
        return self.share.group_threshold

    @property
    def group_count(self) -> int:
        return self.share.group_count

    @property
    def extendable(self) -> bool:
        return self.share.extendable


def expand_words(text: str, *, label: str = "share") -> list[str]:
    """Turn typed words into full SLIP-0039 words; a unique 4-letter prefix is enough.

    Args:
        text: the words as typed, separated by white space (case is ignored).
        label: how to name this share in an error.

    Returns:
        The full words.

    Raises:
        ShareWordError: a word is not in the list (position given, never the word).
    """
    out = []
    for pos, raw in enumerate(text.split(), start=1):
        tok = raw.lower()
        if tok in WORD_INDEX_MAP:
            out.append(tok)
            continue
        full = _PREFIX.get(tok[:4]) if len(tok) >= 4 else None
        if full is None or not full.startswith(tok):
            why = (
                "is too short (type at least 4 letters)"
                if len(tok) < 4
                else "is not in the SLIP-0039 word list"
            )
            raise ShareWordError(
                f"{label}: word {pos} {why}",
                f"Check the spelling of word {pos} against the card.",
                share=label,
                position=pos,
            )
        out.append(full)
    return out


def _step(chk: int, v: int) -> int:
    # RS1024 polymod step (SLIP-0039 "Checksum"); linear over GF(2) in (chk, v).
    gen = (
        0xE0E040,
        0x1C1C080,
        0x3838100,
        0x7070200,
        0xE0E0009,
        0x1C0C2412,
        0x38086C24,
        0x3090FC48,
        0x21B1F890,
        0x3F3F120,
    )
    b = chk >> 20
    chk = (chk & 0xFFFFF) << 10 ^ v
    for i in range(10):
        if (b >> i) & 1:
            chk ^= gen[i]
    return chk


@functools.lru_cache(maxsize=1)
def _syndrome_tables() -> tuple[dict[int, int], ...]:
    """For each distance k from the end, map the residue of a word error e to e."""
    states = [_step(0, e) for e in range(1024)]
    tables = []
    for _ in range(40):
        tables.append({s: e for e, s in enumerate(states) if e})
        states = [_step(s, 0) for s in states]
    return tuple(tables)


def locate_single_error(indices: Sequence[int]) -> int | None:
    """Find the 1-based position of a single wrong word, or None when there is none or
    more than one. Tries both customisation strings, since the extendable bit may be the
    damaged one."""
    tables = _syndrome_tables()
    n = len(indices)
    found: set[int] = set()
    for cs in (CUSTOMIZATION_STRING_ORIG, CUSTOMIZATION_STRING_EXTENDABLE):
        residue = rs1024._polymod(list(cs) + list(indices)) ^ 1
        for pos in range(n):
            k = n - 1 - pos
            e = tables[k].get(residue) if k < len(tables) else None
            if e is None:
                continue
            fixed = list(indices)
            fixed[pos] ^= e
            ext = bool((fixed[1] >> 4) & 1)  # id(15) | ext(1) | exp(4) in the first 2 words
            if (cs == CUSTOMIZATION_STRING_EXTENDABLE) == ext:
                found.add(pos + 1)
    return found.pop() if len(found) == 1 else None


def parse_share(text: str, *, label: str = "share") -> ParsedShare:
    """Decode one mnemonic, diagnosing words, length, checksum and padding.

    Args:
        text: the mnemonic (full words or 4-letter prefixes).
        label: how to name this share in an error ("share 2", "alice.txt:1").

    Returns:
        The parsed share.

    Raises:
        ShareWordError, ShareLengthError, ShareChecksumError, ShareGroupMismatch.
    """
    words = expand_words(text, label=label)
    n = len(words)
    if n < MIN_MNEMONIC_LENGTH_WORDS or (10 * (n - METADATA_LENGTH_WORDS)) % 16 > 8:
        raise ShareLengthError(
            f"{label}: {n} words is not a valid share length",
            "A SLIP-0039 share has 20 words (128-bit secret) or 33 words (256-bit); "
            "check for missing or extra words.",
            share=label,
        )
    indices = [WORD_INDEX_MAP[w] for w in words]
    ext = bool((indices[1] >> 4) & 1)
    cs = CUSTOMIZATION_STRING_EXTENDABLE if ext else CUSTOMIZATION_STRING_ORIG
    if not rs1024.verify_checksum(indices, cs):
        pos = locate_single_error(indices)
        where = f"; word {pos} looks wrong" if pos else "; more than one word looks wrong"
        raise ShareChecksumError(
            f"{label}: checksum failure{where}",
            "Compare the words with the card, in order."
            if pos is None
            else f"Compare word {pos} with the card.",
            share=label,
            position=pos,
        )
    mnemonic = " ".join(words)
    try:
        share = Share.from_mnemonic(mnemonic)
    except MnemonicError as exc:  # padding or group threshold > count; reference text has words
        if "padding" in str(exc):
            raise ShareLengthError(
                f"{label}: invalid padding",
                "The share is damaged or not a SLIP-0039 share.",
                share=label,
            ) from None
        raise ShareGroupMismatch(
            f"{label}: group threshold is greater than the group count",
            "The share is malformed; it cannot belong to a valid set.",
            share=label,
        ) from None
    return ParsedShare(label=label, mnemonic=mnemonic, share=share)
