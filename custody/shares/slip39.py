"""SLIP-0039 splitting and combining, with a precise diagnosis of every bad share.

The math and the word encoding are those of the reference implementation
(``shamir-mnemonic``, pinned), so any SLIP-0039 tool can combine our shares and we can
combine theirs. What this module adds on top (share parsing and the per-share errors live
in :mod:`custody.shares.slip39_parse` and are re-exported here):

- word entry by unique 4-letter prefix (SLIP-0039: "the first four letters ... uniquely
  determine the word");
- one typed :class:`~custody.errors.ShareError` subclass per failure, naming the share by
  its label ("share 3", ``file:line``) and, where it can be found, the word position; a
  single wrong word is located by solving the RS1024 checksum for one error (the code has
  distance 4, so a single-word error has exactly one position);
- a check that surplus shares agree with the polynomial fixed by the others, so a wrong
  share is found even when the set is more than enough;
- randomness as a parameter (``rng``), so tests can be deterministic without patching the
  reference module's globals.

No title or hint ever contains share words, the master secret or the passphrase.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence

from shamir_mnemonic.constants import (
    DIGEST_INDEX,
    DIGEST_LENGTH_BYTES,
)
from shamir_mnemonic.shamir import (
    EncryptedMasterSecret,
    RawShare,
    _create_digest,
    _interpolate,
)
from shamir_mnemonic.share import Share
from shamir_mnemonic.utils import MnemonicError
from shamir_mnemonic.wordlist import WORDLIST

from custody.shares.slip39_parse import (
    DuplicateShareIndex,
    InsufficientShares,
    ParsedShare,
    ShareChecksumError,
    ShareDiagnostic,
    ShareDigestError,
    ShareGroupMismatch,
    ShareLengthError,
    ShareSetMismatch,
    ShareWordError,
    expand_words,
    locate_single_error,
    parse_share,
)

__all__ = [
    "SECRET_INDEX",
    "WORDLIST",
    "DuplicateShareIndex",
    "InsufficientShares",
    "ParsedShare",
    "Rng",
    "ShareChecksumError",
    "ShareDiagnostic",
    "ShareDigestError",
    "ShareGroupMismatch",
    "ShareLengthError",
    "ShareSetMismatch",
    "ShareWordError",
    "check_scheme",
    "combine",
    "combine_parsed",
    "expand_words",
    "locate_single_error",
    "parse_share",
    "split",
]

Rng = Callable[[int], bytes]
SECRET_INDEX = 255


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _check_set(parsed: Sequence[ParsedShare]) -> dict[int, list[ParsedShare]]:
    """Check shares belong together; return them by group index."""
    first = parsed[0]
    groups: dict[int, list[ParsedShare]] = {}
    for p in parsed:
        a, b = first.share, p.share
        if (a.identifier, a.extendable, a.iteration_exponent) != (
            b.identifier,
            b.extendable,
            b.iteration_exponent,
        ):
            raise ShareSetMismatch(
                f"{p.label} is from a different set than {first.label}",
                "Their identifier words (the first words) differ: this share belongs to "
                "another split. Remove it.",
                share=p.label,
            )
        if (a.group_threshold, a.group_count) != (b.group_threshold, b.group_count):
            raise ShareGroupMismatch(
                f"{p.label} disagrees with {first.label} on the groups "
                f"({b.group_threshold} of {b.group_count} vs {a.group_threshold} of "
                f"{a.group_count})",
                "One of the two shares is damaged or from another split.",
                share=p.label,
            )
        members = groups.setdefault(p.group_index, [])
        for q in members:
            if q.member_threshold != p.member_threshold:
                raise ShareGroupMismatch(
                    f"{p.label} and {q.label} are in group {p.group_index + 1} but disagree on "
                    f"its threshold ({p.member_threshold} vs {q.member_threshold})",
                    "One of the two shares is damaged or from another split.",
                    share=p.label,
                )
            if q.member_index == p.member_index:
                same = q.mnemonic == p.mnemonic
                raise DuplicateShareIndex(
                    f"{p.label} "
                    + ("is the same share as " if same else "has the same member index as ")
                    + q.label
                    + f" (group {p.group_index + 1}, member {p.member_index + 1})",
                    "Each custodian's share must be given once; remove the duplicate.",
                    share=p.label,
                )
        members.append(p)
    return groups


def _recover(threshold: int, pts: Sequence[RawShare]) -> bytes:
    if threshold == 1:
        return pts[0].data
    secret = _interpolate(pts, SECRET_INDEX)
    dig = _interpolate(pts, DIGEST_INDEX)
    if dig[:DIGEST_LENGTH_BYTES] != _create_digest(dig[DIGEST_LENGTH_BYTES:], secret):
        raise MnemonicError("digest")
    return secret


def _check_surplus(pts: Sequence[tuple[str, RawShare]], threshold: int, where: str) -> None:
    """Every point beyond the first *threshold* must lie on the polynomial they fix."""
    base = [r for _, r in pts[:threshold]]
    for label, extra in pts[threshold:]:
        want = base[0].data if threshold == 1 else _interpolate(base, extra.x)
        if want != extra.data:
            raise ShareDigestError(
                f"{label} does not agree with the other shares of {where}",
                "Its checksum is valid but its value is not from this split: verify it "
                "against its envelope.",
                share=label,
            )


def combine_parsed(parsed: Sequence[ParsedShare], passphrase: bytes = b"") -> bytes:
    """Combine decoded shares into the master secret.

    Args:
        parsed: shares from :func:`parse_share`, in any order; surplus shares are checked.
        passphrase: the SLIP-0039 passphrase (printable ASCII). A wrong passphrase yields
            a different secret by design of SLIP-0039; check the KCV to detect it.

    Returns:
        The master secret.

    Raises:
        InsufficientShares, ShareSetMismatch, ShareGroupMismatch, DuplicateShareIndex,
        ShareDigestError.
    """
    if not parsed:
        raise InsufficientShares("No shares were given", "Provide the shares, one per line.")
    groups = _check_set(parsed)
    first = parsed[0]
    gt = first.group_threshold
    complete = {g: m for g, m in groups.items() if len(m) >= m[0].member_threshold}
    if len(complete) < gt:
        parts = [
            f"group {g + 1} needs {m[0].member_threshold - len(m)} more "
            f"({len(m)} of {m[0].member_threshold})"
            for g, m in sorted(groups.items())
            if g not in complete
        ]
        ok = [f"group {g + 1} complete" for g in sorted(complete)]
        missing = gt - len(complete)
        head = (
            f"Too few shares: {gt} of {first.group_count} groups are needed, "
            f"{missing} more group{'s' if missing > 1 else ''} must be completed"
        )
        if first.group_count == 1:
            m = groups[first.group_index]
            head = (
                f"Too few shares: {m[0].member_threshold} are needed, "
                f"{_plural(m[0].member_threshold - len(m), 'more share')} required"
            )
            parts, ok = [], []
        raise InsufficientShares(
            head + (" (" + "; ".join(ok + parts) + ")" if ok + parts else ""),
            "Ask the missing custodians for their shares.",
        )
    group_pts: list[tuple[str, RawShare]] = []
    try:
        for g, members in sorted(complete.items()):
            t = members[0].member_threshold
            pts = [(m.label, RawShare(m.member_index, m.share.value)) for m in members]
            _check_surplus(pts, t, f"group {g + 1}")
            try:
                gsecret = _recover(t, [r for _, r in pts[:t]])
            except MnemonicError:
                raise ShareDigestError(
                    f"The shares of group {g + 1} do not combine (digest check failed)",
                    "A share in this group is wrong although its checksum is valid; verify "
                    "each against its envelope.",
                ) from None
            group_pts.append((f"group {g + 1}", RawShare(g, gsecret)))
        _check_surplus(group_pts, gt, "the set")
        try:
            ems = _recover(gt, [r for _, r in group_pts[:gt]])
        except MnemonicError:
            raise ShareDigestError(
                "The groups do not combine (digest check failed)",
                "A share is wrong although its checksum is valid; verify each share "
                "against its envelope.",
            ) from None
    except MnemonicError as exc:  # pragma: no cover - defensive: reference invariants
        raise ShareDigestError("The shares are inconsistent", "Verify each share.") from exc
    if len(ems) % 2:
        raise ShareLengthError("The shares encode an odd-length secret", "The shares are damaged.")
    e = EncryptedMasterSecret(
        first.identifier, first.extendable, first.share.iteration_exponent, ems
    )
    return e.decrypt(passphrase)


def combine(
    mnemonics: Sequence[str], passphrase: bytes = b"", *, labels: Sequence[str] | None = None
) -> bytes:
    """Parse and combine mnemonics (see :func:`parse_share` and :func:`combine_parsed`).

    Args:
        mnemonics: one share per item.
        passphrase: the SLIP-0039 passphrase.
        labels: a name per share for errors; default "share 1", "share 2", ...

    Returns:
        The master secret.

    Raises:
        ShareError subclasses as above; the first bad share (in order) is reported.
    """
    _check_passphrase(passphrase)
    labels = labels or [f"share {i}" for i in range(1, len(mnemonics) + 1)]
    parsed = [parse_share(m, label=lab) for m, lab in zip(mnemonics, labels, strict=True)]
    return combine_parsed(parsed, passphrase)


def _check_passphrase(passphrase: bytes) -> None:
    if not all(32 <= c <= 126 for c in passphrase):
        raise ValueError("the SLIP-0039 passphrase must be printable ASCII")


def _split_raw(t: int, n: int, secret: bytes, rng: Rng) -> list[RawShare]:
    # SLIP-0039 "Splitting the secret": t-2 random shares, the digest share and the
    # secret fix the polynomial; the remaining shares are interpolated.
    if t == 1:
        return [RawShare(i, secret) for i in range(n)]
    pts = [RawShare(i, rng(len(secret))) for i in range(t - 2)]
    rnd = rng(len(secret) - DIGEST_LENGTH_BYTES)
    base = [
        *pts,
        RawShare(DIGEST_INDEX, _create_digest(rnd, secret) + rnd),
        RawShare(SECRET_INDEX, secret),
    ]
    return pts + [RawShare(i, _interpolate(base, i)) for i in range(t - 2, n)]


def check_scheme(groups: Sequence[tuple[int, int]], group_threshold: int) -> None:
    """Refuse a scheme :func:`split` cannot make (the one rule, checked before a ceremony
    records anything as well as by :func:`split` itself).

    Raises:
        ValueError: at most 16 groups, 1 <= group threshold <= groups, and per group
            1 <= threshold <= count <= 16, never 1-of-n with n > 1 (SLIP-0039).
    """
    if not 1 <= len(groups) <= 16 or not 1 <= group_threshold <= len(groups):
        raise ValueError("need 1 <= group threshold <= number of groups <= 16")
    for t, n in groups:
        if not 1 <= t <= n <= 16:
            raise ValueError("each group needs 1 <= threshold <= count <= 16")
        if t == 1 and n > 1:
            raise ValueError("a 1-of-n group (n > 1) is not allowed by SLIP-0039; use 1/1")


def split(
    secret: bytes,
    *,
    groups: Sequence[tuple[int, int]],
    group_threshold: int = 1,
    passphrase: bytes = b"",
    extendable: bool = True,
    iteration_exponent: int = 1,
    rng: Rng = secrets.token_bytes,
) -> tuple[tuple[str, ...], ...]:
    """Split *secret* into SLIP-0039 mnemonics, grouped.

    Args:
        secret: 16 to 32 bytes, an even number.
        groups: (member threshold, member count) per group, at most 16 groups.
        group_threshold: how many groups are needed.
        passphrase: SLIP-0039 passphrase, printable ASCII.
        extendable: set the extendable-backup flag (SLIP-0039 ext = 1).
        iteration_exponent: PBKDF2 cost exponent e (10000 * 2^e iterations), 0..15.
        rng: source of random bytes (tests may pass a seeded one).

    Returns:
        One tuple of mnemonics per group, in group order.

    Raises:
        ValueError: bad lengths, thresholds or passphrase (a caller's bug).
    """
    _check_passphrase(passphrase)
    if not 16 <= len(secret) <= 32 or len(secret) % 2:
        raise ValueError("the secret must be 16 to 32 bytes, an even number")
    check_scheme(groups, group_threshold)
    if not 0 <= iteration_exponent <= 15:
        raise ValueError("iteration exponent must be 0..15")
    identifier = int.from_bytes(rng(2), "big") & 0x7FFF
    ems = EncryptedMasterSecret.from_master_secret(
        secret, passphrase, identifier, extendable, iteration_exponent
    )
    out = []
    group_shares = _split_raw(group_threshold, len(groups), ems.ciphertext, rng)
    for (t, n), gpt in zip(groups, group_shares, strict=True):  # one share per group
        out.append(
            tuple(
                Share(
                    identifier,
                    extendable,
                    iteration_exponent,
                    gpt.x,
                    group_threshold,
                    len(groups),
                    m.x,
                    t,
                    m.data,
                ).mnemonic()
                for m in _split_raw(t, n, gpt.data, rng)
            )
        )
    return tuple(out)
