"""``object_groups`` (what ``dek verify`` reads) on disk: every row exactly once, grouped by
the branch and version its row names, from one snapshot while a second connection re-keys;
on both adapters."""

from __future__ import annotations

from custody.store.rows import LeaseRow, NewKek, NewObject, NewRoot, ObjectMove
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


def test_object_page_walks_one_version_in_id_order_with_writes_between_pages(
    backend: Backend,
) -> None:
    s = _store(backend, 2500)
    truth = [
        (int(r[0]), bytes(r[1]), bytes(r[2]), bytes(r[3]))
        for r in s.query(
            "SELECT id, uid, wrapped, digest FROM objects "
            "WHERE branch='data' AND kek_version=1 ORDER BY id"
        )
    ]
    got: list[tuple[int, bytes, bytes, bytes]] = []
    after, pages = 0, 0
    while page := s.object_page("data", 1, after=after, limit=300):
        assert not s.in_transaction  # each page is one short read: a write may follow
        with s.transaction():  # what the re-key verify step does between pages
            s.put_lease(
                LeaseRow(name="rekey", token="a" * 32, owner_pid=1, owner_host="h",
                         acquired=NOW, expires=NOW)
            )  # fmt: skip
        assert all(o.branch == "data" and o.kek_version == 1 for _, o in page)
        got += [(i, o.uid, o.wrapped, o.digest) for i, o in page]
        after, pages = page[-1][0], pages + 1
    assert got == truth and len(truth) == 2500 - 834  # every v1 row once, in id order
    assert pages == -(-len(truth) // 300)
    assert s.object_page("data", 2, after=0, limit=10)[0][1].kek_version == 2
    assert s.object_page("data", 1, after=truth[-1][0], limit=10) == []
    assert s.object_page("nope", 1, after=0, limit=10) == []
    plan = " ".join(
        str(r[-1])
        for r in s.query(
            ("EXPLAIN QUERY PLAN " if backend.kind == "sqlite" else "EXPLAIN ")
            + "SELECT id FROM objects WHERE branch='data' AND kek_version=1 AND id>5 "
            "ORDER BY id LIMIT 10"
        )
    )
    assert "objects_by_version" in plan, plan  # an index range, not a scan past moved rows
    s.close()
