"""Leak detection: custody-format API keys and known secret values in files and git history.

Two detectors, neither of which keeps or compares a plain value:

- **custody-format keys**, by shape and checksum alone (:func:`custody.secrets.standards.
  find_api_keys`): no database is needed, and a random string of the same shape passes the
  checksum once in 2^32;
- **known values**, by keyed hash: the caller gives a :class:`KnownValues` index of
  ``HMAC(k, value)`` under a key made for this scan only; every candidate token of the
  scanned text is hashed under the same key and looked up. The index never leaves memory.

Sources: files, directories (recursively; ``.git`` skipped) and a git repository's whole
history (every commit's added lines, ``git log -p --all``), or the staged changes for a
pre-commit hook (``git diff --cached``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from custody.errors import UsageError
from custody.secrets.standards import find_api_keys

MAX_FILE = 4 * 1024 * 1024
_TOKEN = re.compile(r"[^\s\"'`=:,;()\[\]{}<>]{8,}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Hit:
    """One finding: where, and what kind (never the value itself)."""

    kind: str  # "custody-key" | "known-value"
    file: str
    line: int
    commit: str | None = None
    secret: str | None = None  # env:path of a known value
    prefix: str | None = None  # a custody key's prefix

    def to_json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "file": self.file,
            "line": self.line,
            "commit": self.commit,
            "secret": self.secret,
            "prefix": self.prefix,
        }


@dataclass(slots=True)
class KnownValues:
    """Keyed hashes of the values to look for, under a key made for this scan."""

    key: bytes = field(default_factory=lambda: os.urandom(32), repr=False)
    index: dict[bytes, str] = field(default_factory=dict, repr=False)

    def tag(self, text: str) -> bytes:
        return hmac.new(self.key, text.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()

    def add(self, value: str, name: str) -> None:
        if len(value) >= 8:  # shorter values would match ordinary words
            self.index[self.tag(value)] = name

    def __len__(self) -> int:
        return len(self.index)

    def __repr__(self) -> str:
        return f"KnownValues({len(self.index)} values)"


def _candidates(line: str) -> Iterator[str]:
    """Tokens of a line that could be a whole value: runs between separators (and, for
    values with inner spaces, the whole stripped line and its right-hand side)."""
    yield from _TOKEN.findall(line)
    stripped = line.strip()
    if stripped:
        yield stripped
        for sep in ("=", ":"):
            if sep in stripped:
                rhs = stripped.split(sep, 1)[1].strip().strip("\"'` ,;")
                if rhs:
                    yield rhs


def scan_text(
    text: str,
    file: str,
    known: KnownValues | None,
    *,
    commit: str | None = None,
    first_line: int = 1,
    lines: Iterable[int] | None = None,
) -> list[Hit]:
    """Findings in *text*. *lines* gives each text line's number in its file (diff hunks)."""
    hits: list[Hit] = []
    numbers = list(lines) if lines is not None else None
    for i, ln in enumerate(text.splitlines()):
        no = numbers[i] if numbers is not None and i < len(numbers) else first_line + i
        for _, key in find_api_keys(ln):
            hits.append(
                Hit(
                    kind="custody-key",
                    file=file,
                    line=no,
                    commit=commit,
                    prefix=key.rsplit("_", 1)[0][:40],
                )
            )
        if known is not None and len(known):
            seen: set[str] = set()
            for cand in _candidates(ln):
                name = known.index.get(known.tag(cand))
                if name is not None and name not in seen:
                    seen.add(name)
                    hits.append(
                        Hit(kind="known-value", file=file, line=no, commit=commit, secret=name)
                    )
    return hits


def scan_paths(paths: Iterable[str | os.PathLike[str]], known: KnownValues | None) -> list[Hit]:
    """Scan files and directories (recursively, skipping ``.git`` and files over 4 MiB)."""
    hits: list[Hit] = []
    for root in paths:
        p = Path(root)
        if not p.exists():
            raise UsageError(f"No such file or directory: {p}", "Check the path.")
        files = (
            [p]
            if p.is_file()
            else sorted(
                f for f in p.rglob("*") if f.is_file() and ".git" not in f.relative_to(p).parts
            )
        )
        for f in files:
            try:
                if f.stat().st_size > MAX_FILE:
                    continue
                text = f.read_bytes().decode("utf-8", "replace")
            except OSError:
                continue
            hits += scan_text(text, str(f), known)
    return hits


def _git(repo: Path, *args: str) -> str:
    try:
        p = subprocess.run(  # git from PATH, argv only, no shell
            ["git", "-C", str(repo), *args], capture_output=True, check=False, timeout=600
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError("git could not be run", f"Install git ({type(exc).__name__}).") from exc
    if p.returncode != 0:
        raise UsageError(
            f"{repo} is not a git repository (or git failed)",
            p.stderr.decode("utf-8", "replace").strip()[:200] or "Check the path.",
        )
    return p.stdout.decode("utf-8", "replace")


_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,\d+)? @@")


def _scan_patch(patch: str, known: KnownValues | None, commit_marker: str) -> list[Hit]:
    hits: list[Hit] = []
    commit: str | None = None
    file = ""
    no = 0
    for ln in patch.splitlines():
        if ln.startswith(commit_marker):
            commit = ln[len(commit_marker) :].strip() or None
        elif ln.startswith("+++ "):
            file = ln[4:].removeprefix("b/")
        elif ln.startswith("@@"):
            m = _HUNK.match(ln)
            no = int(m.group(1)) if m else 0
        elif ln.startswith("+") and not ln.startswith("+++"):
            hits += scan_text(ln[1:], file, known, commit=commit, first_line=no)
            no += 1
        elif not ln.startswith("-"):
            no += 1
    return hits


def scan_git_history(repo: str | os.PathLike[str], known: KnownValues | None) -> list[Hit]:
    """Every line any commit added, in every branch: a key deleted later is still found."""
    patch = _git(Path(repo), "log", "-p", "--all", "--no-color", "--format=commit:%H", "-U0")
    return _scan_patch(patch, known, "commit:")


def scan_staged(repo: str | os.PathLike[str], known: KnownValues | None) -> list[Hit]:
    """The staged changes (a pre-commit hook)."""
    patch = _git(Path(repo), "diff", "--cached", "--no-color", "-U0")
    return _scan_patch(patch, known, "commit:")
