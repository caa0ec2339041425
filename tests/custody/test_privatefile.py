"""custody/privatefile.py, the one writer of secret-bearing files (issue 11, item 7): 0600
from creation, a fresh temporary name, never through a link, 0700 directories."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from custody.errors import StorageError, UsageError
from custody.privatefile import PUBLIC, private_dir, private_file, write_private


def _mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def test_writer_is_0600_from_creation_even_with_umask_0(tmp_path):
    target = tmp_path / "s.txt"
    old = os.umask(0)
    try:
        with private_file(target) as fd:
            temps = [p for p in tmp_path.iterdir()]
            assert len(temps) == 1 and temps[0].name.startswith(".s.txt.")
            assert temps[0].name.endswith(".tmp") and _mode(temps[0]) == 0o600
            assert not target.exists()  # the name appears only once the file is whole
            os.write(fd, b"secret words\n")
        write_private(tmp_path / "pub.json", b"{}\n", mode=PUBLIC)
    finally:
        os.umask(old)
    assert target.read_bytes() == b"secret words\n" and _mode(target) == 0o600
    assert _mode(tmp_path / "pub.json") == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pub.json", "s.txt"]


def test_writer_ignores_leftover_tmp_files_and_links(tmp_path):
    loot = tmp_path / "loot"
    loot.write_bytes(b"")
    target = tmp_path / "alice.share.txt"
    # every name the old helpers used: NAME.tmp, as a stale world-readable file and as a link
    (tmp_path / "alice.share.txt.tmp").write_bytes(b"stale")
    (tmp_path / "alice.share.txt.tmp").chmod(0o644)
    (tmp_path / ".alice.share.txt.tmp").symlink_to(loot)
    write_private(target, b"the share\n")
    assert target.read_bytes() == b"the share\n" and _mode(target) == 0o600
    assert not target.is_symlink()
    assert loot.read_bytes() == b"" and (tmp_path / "alice.share.txt.tmp").read_bytes() == b"stale"


def test_writer_refuses_a_link_at_the_target_and_changes_nothing(tmp_path):
    loot = tmp_path / "loot"
    loot.write_bytes(b"")
    target = tmp_path / "bob.share.txt"
    target.symlink_to(loot)
    with pytest.raises(StorageError, match="symbolic link"):
        write_private(target, b"the share\n")
    assert target.is_symlink() and loot.read_bytes() == b""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bob.share.txt", "loot"]  # no temp
    dangling = tmp_path / "carol.share.txt"
    dangling.symlink_to(tmp_path / "not-yet")
    with pytest.raises(StorageError, match="symbolic link"):
        write_private(dangling, b"x")
    assert not (tmp_path / "not-yet").exists()


def test_writer_exclusive_and_failure_leave_nothing(tmp_path):
    target = tmp_path / "k.pem"
    write_private(target, b"one", exclusive=True)
    with pytest.raises(UsageError, match="already exists"):
        write_private(target, b"two", exclusive=True)
    assert target.read_bytes() == b"one"
    with pytest.raises(RuntimeError), private_file(tmp_path / "half") as fd:
        os.write(fd, b"half a share")
        raise RuntimeError("crash in the middle")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.pem"]


def test_private_dir_is_0700_and_refuses_a_dir_others_can_write(tmp_path):
    old = os.umask(0o022)
    try:
        d = private_dir(tmp_path / "a" / "shares")
    finally:
        os.umask(old)
    assert _mode(d) == 0o700
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    with pytest.raises(StorageError, match="other users") as ei:
        private_dir(open_dir)
    assert f"chmod 700 {open_dir}" in ei.value.hint
    open_dir.chmod(0o1777)  # sticky, like /tmp: others cannot rename our files away
    assert private_dir(open_dir) == open_dir
