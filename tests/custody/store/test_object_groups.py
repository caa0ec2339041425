"""``object_groups`` (what ``dek verify`` reads) on disk: every row exactly once, grouped by
the branch and version its row names, from one snapshot while a second connection re-keys;
on both adapters."""

from __future__ import annotations

from custody.store.rows import NewKek, NewObject, NewRoot, ObjectMove
from tests.custody.store.conftest import Backend
from tests.custody.store.conftest import RawStore as Store

NOW = "2026-01-01T00:00:00+00:00"


def _store(backend: Backend, n: int) -> Store:
    s = backend.open(create=True)
    s.add_root(NewRoot(version=1, kcv="aaaaaa", epoch=None, blob=None), activate=True, now=NOW)
    for v in (1, 2):
        s.add_kek(NewKek(branch="data", version=v, kcv="b", root_version=1, wrapped=b"k"), now=NOW)
    s.add_objects(
        [
            NewObject(
                uid=i.to_bytes(16, "big"),
                kind="dek",
                branch="data",
                kek_version=1 + (i % 3 == 0),
                wrapped=b"w%d" % i,
                digest=b"d%d" % i,
                label=None,
            )
            for i in range(n)
        ],
        now=NOW,
    )
    return s


def test_groups_cover_every_row_once_with_its_own_version(backend: Backend) -> None:
    s = _store(backend, 2500)
    with s.tx() as c:  # odd rows a raw writer left behind: still read, under what they name
        c.execute("UPDATE objects SET kek_version=7 WHERE uid=?", ((5).to_bytes(16, "big"),))
        c.execute("UPDATE objects SET branch='other' WHERE uid=?", ((7).to_bytes(16, "big"),))
    seen: dict[bytes, tuple[str, int, bytes, bytes]] = {}
    sizes = []
    for branch, version, rows in s.object_groups(batch=400):
        sizes.append(len(rows))
        for uid, wrapped, digest in rows:
            assert uid not in seen
            seen[uid] = (branch, version, wrapped, digest)
    assert max(sizes) == 400 and sum(sizes) == 2500
    truth = {
        bytes(r[0]): (r[1], r[2], bytes(r[3]), bytes(r[4]))
        for r in s.query("SELECT uid, branch, kek_version, wrapped, digest FROM objects")
    }
    assert seen == truth
    sample = [u for _, _, rows in s.object_groups(sample=50) for u, _, _ in rows]
    assert len(sample) == len(set(sample)) == 50
    assert not s.in_transaction  # the read snapshot ended with the iteration
    s.close()


def test_one_snapshot_while_another_connection_rekeys(backend: Backend) -> None:
    s = _store(backend, 3000)
    other = backend.open()
    it = s.object_groups(batch=100)
    first = next(it)  # the snapshot is taken; now every v1 row moves to v2 and commits
    with other.transaction():
        claimed = other.claim_objects("data", 1, 10_000)
        assert other.move_objects([ObjectMove(c.wrapped, 2, NOW, c.id, 1) for c in claimed])
    uids = [u for u, _, _ in first[2]]
    versions = {first[1]}
    for _branch, version, rows in it:
        uids.extend(u for u, _, _ in rows)
        versions.add(version)
    assert len(uids) == len(set(uids)) == 3000  # none missed, none twice
    assert versions == {1, 2}  # as of the snapshot
    assert [v for _, v, _ in s.object_groups(batch=100)] == [2] * 30  # and afterwards, the move
    other.close()
    s.close()


def test_two_scans_at_once(backend: Backend) -> None:
    s = _store(backend, 300)
    try:
        outer = s.iter_objects()
        first = next(iter(outer))
        inner = list(s.iter_objects())  # a second scan while the first is open
        rest = list(outer)
        assert len(inner) == 300 and len(rest) + 1 == 300
        assert {o.uid for o in inner} == {first.uid, *(o.uid for o in rest)}
    finally:
        s.close()
