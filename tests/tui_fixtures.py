"""Shared helpers for the TUI pilot tests: a development home built through the CLI, and
letting a pilot settle (pending messages and workers done)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import TEST_PIN, TEST_SO_PIN, run_cli


def dev_home(d: Path, deks: int, *, rotate_after: bool = False) -> tuple[Path, Path]:
    """A dev-root home under *d* (``d/home``, PIN file ``d/pins``) with a data KEK and
    *deks* DEKs; with *rotate_after*, the data KEK is rotated once more after the DEKs.
    Returns (home, pins)."""
    pins = d / "pins"
    pins.write_text(f"pin={TEST_PIN}\nso_pin={TEST_SO_PIN}\n")
    pins.chmod(0o600)
    h = d / "home"
    steps: list[tuple[str, ...]] = [
        ("init", "--dev-root"),
        ("kek", "rotate", "--branch", "data"),
        ("dek", "generate", "--count", str(deks)),
    ]
    if rotate_after:
        steps.append(("kek", "rotate", "--branch", "data"))
    for args in steps:
        r = run_cli(*args, "--home", str(h), "--pin-file", str(pins))
        assert r.returncode == 0, r.stderr
    return h, pins


async def settle(pilot) -> None:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
