"""The crash harness at test size: SIGKILL re-key and backup re-encryption, resume, check."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.crash_harness import backup_crash, rekey_crash

pytestmark = pytest.mark.hsm


def test_rekey_survives_sigkill(tmp_path: Path) -> None:
    r = rekey_crash(tmp_path, objects=5000, kills=8, seed=7, batch=500)
    assert r.kills == 8 and r.checked == 5000


def test_backup_full_rekey_survives_sigkill(tmp_path: Path) -> None:
    r = backup_crash(tmp_path, mib=8, kills=5, seed=7, chunk=64 << 10, checkpoint_mib=1)
    assert r.kills == 5 and r.checked == 8
