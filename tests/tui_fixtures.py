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


def half_block_image(lines: list[str], *, module: int = 4, surround: int = 0):
    """What a terminal shows for a half-block QR drawn black on white (the TUI's style):
    each character cell is one module wide and two high, its foreground (black) in the
    upper half for the upper half block, the lower half for the lower one, both for a
    full block; the background (white) elsewhere. *surround*: the grey level around it
    (0: a dark terminal theme, the worst case for the quiet zone)."""
    from PIL import Image

    w = max(len(ln) for ln in lines)
    pad = 6 * module
    img = Image.new("L", (w * module + 2 * pad, len(lines) * 2 * module + 2 * pad), surround)
    px = img.load()
    assert px is not None
    for y, line in enumerate(lines):
        for x, ch in enumerate(line.ljust(w)):
            halves = (ch in "\u2588\u2580", ch in "\u2588\u2584")  # (top dark, bottom dark)
            for half, dark in enumerate(halves):
                for dy in range(module):
                    for dx in range(module):
                        px[pad + x * module + dx, pad + (2 * y + half) * module + dy] = (
                            0 if dark else 255
                        )
    return img


def decode_qr(img, *, try_invert: bool = False) -> list[str]:
    """The texts of the QR codes zxing-cpp finds in *img* (not inverted by default: a
    QR drawn in reverse video is a bug)."""
    import zxingcpp

    return [b.text for b in zxingcpp.read_barcodes(img, try_invert=try_invert)]
