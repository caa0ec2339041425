"""Backup containers through the real CLI: round trip, tampering, rewrap, disk full."""

from __future__ import annotations

import os
import struct
import subprocess
from pathlib import Path

import pytest

from custody.backup import format as bf
from tests.rekey_fixtures import cli, cli_json, db, make_deployment

# One xdist worker runs the whole module, so its module-scoped deployment is built once,
# not once on each worker.
pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("backup")]
CHUNK = 4096


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, Path]:
    root = tmp_path_factory.mktemp("bk")
    home, pins = make_deployment(root, backup_kek=True)
    src = root / "src.bin"
    src.write_bytes(os.urandom(5 * CHUNK + 123))
    bk = root / "orig.cbk"
    cli(home, pins, "backup", "create", str(src), "--out", str(bk), "--chunk-size", str(CHUNK))
    return home, pins, src, bk


def tampered(dep: tuple[Path, Path, Path, Path], name: str, mutate) -> subprocess.CompletedProcess:
    home, pins, _src, bk = dep
    data = bytearray(bk.read_bytes())
    hlen = bf.parse_header(bytes(data)).length
    bad = bk.with_name(name)
    bad.write_bytes(mutate(data, hlen))
    return cli(home, pins, "backup", "verify", str(bad), check=False)


def test_round_trip_and_catalog(dep, tmp_path: Path) -> None:
    home, pins, src, bk = dep
    info = cli_json(home, pins, "backup", "verify", str(bk))
    assert info["chunks"] == 6 and info["bytes"] == src.stat().st_size
    out = tmp_path / "restored"
    cli(home, pins, "backup", "restore", str(bk), "--out", str(out))
    assert out.read_bytes() == src.read_bytes()
    with db(home) as c:
        assert c.execute("SELECT COUNT(*) FROM backups WHERE kek_version=1").fetchone()[0] >= 1


def test_empty_and_exact_multiple_files(dep, tmp_path: Path) -> None:
    home, pins, _src, _bk = dep
    for size in (0, CHUNK, 3 * CHUNK):
        s = tmp_path / f"s{size}"
        s.write_bytes(os.urandom(size))
        b = tmp_path / f"b{size}.cbk"
        cli(home, pins, "backup", "create", str(s), "--out", str(b), "--chunk-size", str(CHUNK))
        o = tmp_path / f"o{size}"
        cli(home, pins, "backup", "restore", str(b), "--out", str(o))
        assert o.read_bytes() == s.read_bytes()


def _swap(d: bytearray, h: int) -> bytes:
    step = CHUNK + 16
    a, b = d[h : h + step], d[h + step : h + 2 * step]
    return bytes(d[:h] + b + a + d[h + 2 * step :])


CASES = {
    "flipped ciphertext byte": lambda d, h: (
        bytes(d[: h + 10]) + bytes([d[h + 10] ^ 1]) + bytes(d[h + 11 :])
    ),
    "truncated at a chunk boundary": lambda d, h: bytes(d[: h + 3 * (CHUNK + 16)]),
    "truncated mid chunk": lambda d, h: bytes(d[:-50]),
    "last chunk dropped": lambda d, h: bytes(d[: h + 5 * (CHUNK + 16)]),
    "chunks swapped": _swap,
    "chunk appended": lambda d, h: bytes(d) + bytes(d[h : h + CHUNK + 16]),
    "file id changed": lambda d, h: bytes(d[:14]) + bytes([d[14] ^ 1]) + bytes(d[15:]),
    "chunk size changed": lambda d, h: bytes(d[:10]) + struct.pack(">I", 2 * CHUNK) + bytes(d[14:]),
    "wrapped key altered": lambda d, h: (
        bytes(d[: h - 3]) + bytes([d[h - 3] ^ 1]) + bytes(d[h - 2 :])
    ),
    "bad magic": lambda d, h: b"X" + bytes(d[1:]),
    "header only": lambda d, h: bytes(d[:h]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_tampering_is_detected(dep, name: str) -> None:
    proc = tampered(dep, name.replace(" ", "_") + ".cbk", CASES[name])
    assert proc.returncode == 6, proc.stderr
    assert "backup" in proc.stderr.lower()


def test_restore_of_tampered_backup_leaves_no_output(dep, tmp_path: Path) -> None:
    home, pins, _src, bk = dep
    bad = tmp_path / "bad.cbk"
    bad.write_bytes(
        CASES["last chunk dropped"](
            bytearray(bk.read_bytes()), bf.parse_header(bk.read_bytes()).length
        )
    )
    out = tmp_path / "out"
    proc = cli(home, pins, "backup", "restore", str(bad), "--out", str(out), check=False)
    assert proc.returncode == 6
    assert not out.exists() and not (tmp_path / "out.partial").exists()


def test_header_rewrap_touches_only_the_header(dep, tmp_path: Path) -> None:
    home, pins, src, bk = dep
    copy = tmp_path / "copy.cbk"
    copy.write_bytes(bk.read_bytes())
    cli(home, pins, "kek", "rotate", "--branch", "backup")
    before = copy.read_bytes()
    out = cli_json(home, pins, "backup", "rekey", str(copy))
    assert out["files"][0]["mode"] == "rewrap" and out["files"][0]["kek_version"] >= 2
    after = copy.read_bytes()
    h = bf.parse_header(before).length
    assert len(after) == len(before) and after[h:] == before[h:] and after[:37] == before[:37]
    assert after[:h] != before[:h]
    assert bf.parse_header(after).kek_version == out["files"][0]["kek_version"]
    restored = tmp_path / "r"
    cli(home, pins, "backup", "restore", str(copy), "--out", str(restored))
    assert restored.read_bytes() == src.read_bytes()
    assert not (home / "backup-rewrap.journal").exists()


def test_full_rekey_changes_every_chunk(dep, tmp_path: Path) -> None:
    home, pins, src, bk = dep
    copy = tmp_path / "full.cbk"
    copy.write_bytes(bk.read_bytes())
    before = copy.read_bytes()
    out = cli_json(home, pins, "backup", "rekey", "--full", str(copy))
    after = copy.read_bytes()
    h = bf.parse_header(after).length
    assert out["files"][0]["mode"] == "full" and len(after) == len(before)
    assert after[14:30] == before[14:30]  # same file id
    assert all(
        after[h + i * (CHUNK + 16) : h + i * (CHUNK + 16) + 16]
        != before[h + i * (CHUNK + 16) : h + i * (CHUNK + 16) + 16]
        for i in range(6)
    )
    r = tmp_path / "r"
    cli(home, pins, "backup", "restore", str(copy), "--out", str(r))
    assert r.read_bytes() == src.read_bytes()
    assert not copy.with_name("full.cbk.rekey-tmp").exists()
    assert not copy.with_name("full.cbk.rekey-state").exists()


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    return r.returncode == 0


def test_disk_full_mid_rekey_keeps_original_and_resumes(dep, tmp_path: Path) -> None:
    home, pins, _src, _bk = dep
    mnt = tmp_path / "small"
    if not _mount_tmpfs(mnt, "6m"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        src = tmp_path / "big.bin"
        src.write_bytes(os.urandom(4 << 20))
        bk = mnt / "big.cbk"
        cli(home, pins, "backup", "create", str(src), "--out", str(bk), "--chunk-size", "65536")
        original = bk.read_bytes()
        proc = cli(
            home, pins, "backup", "rekey", "--full", str(bk), "--checkpoint-mib", "1", check=False
        )
        assert proc.returncode == 4 and "disk is full" in proc.stderr
        assert bk.read_bytes() == original  # untouched
        assert bk.with_name("big.cbk.rekey-state").exists()
        cli(home, pins, "backup", "verify", str(bk))
        subprocess.run(["mount", "-o", "remount,size=16m", str(mnt)], check=True)
        out = cli_json(home, pins, "backup", "rekey", "--full", str(bk), "--checkpoint-mib", "1")
        assert out["files"][0]["resumed_from_chunk"] >= 16  # at least one 1 MiB checkpoint
        r = tmp_path / "r"
        cli(home, pins, "backup", "restore", str(bk), "--out", str(r))
        assert r.read_bytes() == src.read_bytes()
        # create on a full disk leaves nothing behind under the final name
        subprocess.run(["mount", "-o", "remount,size=5m", str(mnt)], check=True)
        again = cli(
            home, pins, "backup", "create", str(src), "--out", str(mnt / "b2.cbk"), check=False
        )
        assert again.returncode == 4
        assert not (mnt / "b2.cbk").exists() and not (mnt / "b2.cbk.partial").exists()
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
