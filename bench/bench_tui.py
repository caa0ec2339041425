"""Start-up of ``custody tui`` (to the first painted screen, and to dashboard data on screen)
and of ``custody --help``, each as a fresh process. Prints medians.

The TUI runs in a real pseudo-terminal. The app's bench hook (``CUSTODY_TUI_PAINT_MARKER``)
appends ``paint <monotonic>`` after the first refresh and ``data <monotonic>`` once the
dashboard shows the home's data (HSM login included); ``CUSTODY_TUI_EXIT_AFTER_PAINT=1``
then quits. CLOCK_MONOTONIC is system-wide, so the marker times are comparable with the
time this script took just before starting the process. Also checks that ``custody --help``
does not import Textual.

    .venv/bin/python bench/bench_tui.py [--runs N] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pty
import select
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIN, SO_PIN = "bench-user-pin-1234", "bench-so-pin-5678"


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("CUSTODY_")}
    e["PYTHONPATH"] = str(ROOT)
    e.setdefault("TERM", "xterm-256color")
    return e


def make_home(tmp: Path) -> tuple[Path, Path]:
    pins = tmp / "pins"
    pins.write_text(f"pin={PIN}\nso_pin={SO_PIN}\n")
    h = tmp / "home"
    for args in (
        ("init", "--dev-root"),
        ("kek", "rotate", "--branch", "data"),
        ("dek", "generate", "--count", "1000"),
    ):
        subprocess.run(
            [sys.executable, "-m", "custody_cli", *args, "--home", str(h), "--pin-file", str(pins)],
            env=env(),
            check=True,
            capture_output=True,
        )
    return h, pins


def tui_once(home: Path, pins: Path, marker: Path) -> tuple[float, float]:
    marker.unlink(missing_ok=True)
    e = env() | {"CUSTODY_TUI_PAINT_MARKER": str(marker), "CUSTODY_TUI_EXIT_AFTER_PAINT": "1"}
    master, slave = pty.openpty()
    os.set_blocking(master, False)
    import fcntl
    import struct
    import termios

    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 32, 100, 0, 0))
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "custody_cli", "tui", "--home", str(home), "--pin-file", str(pins)],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=e,
        start_new_session=True,
    )
    os.close(slave)
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        r, _, _ = select.select([master], [], [], 0.05)
        if r:
            with contextlib.suppress(OSError):
                os.read(master, 65536)  # keep the terminal drained
    if proc.poll() is None:
        proc.kill()
        raise SystemExit("custody tui did not exit after its first paint")
    os.close(master)
    marks = dict(line.split() for line in marker.read_text().splitlines())
    return float(marks["paint"]) - t0, float(marks["data"]) - t0


def help_once() -> float:
    t0 = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "custody_cli", "--help"], env=env(), check=True, capture_output=True
    )
    return time.monotonic() - t0


def help_imports_textual() -> bool:
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "custody_cli", "--help"],
        env=env(),
        check=True,
        capture_output=True,
        text=True,
    )
    mods = {
        line.rsplit("|", 1)[-1].strip().split(".")[0]
        for line in r.stderr.splitlines()
        if "|" in line
    }
    return "textual" in mods or "tui" in mods


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        home, pins = make_home(Path(d))
        marker = Path(d) / "marker"
        tui_once(home, pins, marker)  # warm the page cache
        paints, datas = zip(*(tui_once(home, pins, marker) for _ in range(args.runs)), strict=True)
    helps = [help_once() for _ in range(args.runs)]
    out = {
        "runs": args.runs,
        "tui_first_paint_s": round(statistics.median(paints), 4),
        "tui_data_on_screen_s": round(statistics.median(datas), 4),
        "custody_help_s": round(statistics.median(helps), 4),
        "custody_help_imports_textual": help_imports_textual(),
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(
            f"custody tui: first paint  median {out['tui_first_paint_s'] * 1000:7.1f} ms  "
            f"({args.runs} runs, 100x32 pty)"
        )
        print(
            f"custody tui: data shown   median {out['tui_data_on_screen_s'] * 1000:7.1f} ms  "
            "(dashboard incl. token login, 1,000 DEKs)"
        )
        print(f"custody --help:           median {out['custody_help_s'] * 1000:7.1f} ms")
        print(f"custody --help imports textual: {out['custody_help_imports_textual']}")
    return 1 if out["custody_help_imports_textual"] else 0


if __name__ == "__main__":
    sys.exit(main())
