"""The project's copy of the official SLIP-0039 vectors is the pinned, unchanged file."""

from __future__ import annotations

import hashlib
import json

from tests.conftest import VECTORS

PINNED_SHA256 = "13ebecebdd869dd2bc2cdf69e7ce3a158cf106cac76c39d17682b1c6cdabbdc4"


def test_vectors_are_the_pinned_official_file():
    data = (VECTORS / "slip39-vectors.json").read_bytes()
    assert hashlib.sha256(data).hexdigest() == PINNED_SHA256
    assert len(json.loads(data)) == 45
    assert PINNED_SHA256 in (VECTORS / "README.md").read_text()
