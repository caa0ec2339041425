"""The per-group progress line custodians read at the CLI prompt and in
``custody ceremony status`` (``QuorumView.progress``)."""

from __future__ import annotations

from ceremonies.sharecheck import Holder, LiveCheck, ShareSet, quorum_of


def _set(groups: list[list[int]], gt: int) -> ShareSet:
    holders = {
        (g, m): Holder(name=f"c{g}{m}", fingerprint=f"f{g}{m}", commitment="00")
        for g, (_t, n) in enumerate(groups)
        for m in range(n)
    }
    return ShareSet(
        epoch=0,
        ceremony_id="c",
        dealer=b"",
        scheme={"groups": groups, "group_threshold": gt},
        holders=holders,
    )


def _ok(group: int, member: int) -> LiveCheck:
    return LiveCheck(source="s", status="ok", group=group, member=member)


def test_progress_per_group_counts_distinct_members_that_passed():
    sset = _set([[3, 5], [2, 2]], 2)
    checks = [
        _ok(1, 1),
        _ok(1, 2),
        _ok(1, 2),  # the same member twice counts once
        LiveCheck(source="x", status="rejected", group=2, member=1),  # not counted
        LiveCheck(source="y", status="incomplete", group=2, member=2),  # not counted
    ]
    q = quorum_of(sset, checks)
    assert q.progress() == "group 1: 2 of 3; group 2: 0 of 2; groups met: 0 of 2"
    assert not q.met
    q = quorum_of(sset, [*checks, _ok(1, 4), _ok(2, 1), _ok(2, 2)])
    assert q.progress() == "group 1: 3 of 3; group 2: 2 of 2; groups met: 2 of 2"
    assert q.met


def test_progress_of_one_group_names_only_it():
    q = quorum_of(_set([[3, 5]], 1), [_ok(1, 3)])
    assert q.progress() == "group 1: 1 of 3" and not q.met
