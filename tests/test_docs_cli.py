"""The docs describe the CLI that exists.

Every ``custody ...`` command quoted in README.md or docs/*.md must name real subcommands and
real options of that subcommand, and every ``CUSTODY_*`` environment variable the code reads
must be listed in docs/cli.md (and docs name no variable the code does not read).
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import custody.errors as errors
from custody_cli import build_parser, ceremony_drive

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CODE_DIRS = ["custody", "custody_cli", "ceremonies", "tui", "custody_server", "custody_client"]
ENV_RE = re.compile(r"\bCUSTODY_[A-Z][A-Z0-9_]*[A-Z0-9]\b")


def _subcommands(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            return dict(a.choices)
    return {}


def _options(p: argparse.ArgumentParser) -> set[str]:
    return {o for a in p._actions for o in a.option_strings}


def _quoted_commands(text: str) -> list[str]:
    found = re.findall(r"`(custody [^`\n]+)`", text)
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
        for raw in block.splitlines():
            line = raw.strip().removeprefix("$ ")
            first = line.split(" ", 1)[0]
            if first == "custody" or first.endswith("/custody"):
                found.append("custody " + line.split(" ", 1)[1] if " " in line else "custody")
    return found


def _placeholder(word: str) -> bool:
    return word.isupper() or word[:1] in "<[{(" or "…" in word or word in {"...", "|"}


def check_command(root: argparse.ArgumentParser, command: str) -> list[str]:
    """Problems with one quoted command line (empty when it matches the parser)."""
    try:
        words = shlex.split(command.split("#", 1)[0])
    except ValueError:
        words = command.split()
    p, path = root, ["custody"]
    for w in words[1:]:
        subs = _subcommands(p)
        if w.startswith("-") or not subs or _placeholder(w):
            break
        if w not in subs:
            return [f"{' '.join(path)} has no subcommand {w!r}"]
        p = subs[w]
        path.append(w)
    opts = _options(p)
    problems = []
    for w in words[1:]:
        if w.startswith("--"):
            name = re.sub(r"[^A-Za-z0-9-].*$", "", w[2:])
            if name and f"--{name}" not in opts:
                problems.append(f"{' '.join(path)} has no option --{name}")
    return problems


def test_every_quoted_command_exists_with_its_options():
    root = build_parser()
    problems = [
        f"{doc.relative_to(ROOT)}: `{cmd}`: {problem}"
        for doc in DOCS
        for cmd in _quoted_commands(doc.read_text())
        for problem in check_command(root, cmd)
    ]
    assert problems == []


def test_the_checker_catches_a_wrong_command_and_a_wrong_option():
    root = build_parser()
    assert check_command(root, "custody ceremony generate --key CO.key.pem") == []
    assert check_command(root, "custody ceremony frobnicate") != []
    assert check_command(root, "custody ceremony generate --no-such-flag") != []


def _env_vars_in_code() -> set[str]:
    names: set[str] = set()
    for d in CODE_DIRS:
        for f in (ROOT / d).rglob("*.py"):
            names |= set(ENV_RE.findall(f.read_text()))
    return names


def test_every_environment_variable_is_documented_in_cli_md():
    cli_md = set(ENV_RE.findall((ROOT / "docs" / "cli.md").read_text()))
    assert sorted(_env_vars_in_code() - cli_md) == []


def test_docs_name_no_environment_variable_the_code_does_not_read():
    in_docs = {v for doc in DOCS for v in ENV_RE.findall(doc.read_text())}
    assert sorted(in_docs - _env_vars_in_code()) == []


def test_every_exit_code_is_in_the_cli_md_table():
    codes = {
        c.exit_code
        for c in vars(errors).values()
        if isinstance(c, type) and issubclass(c, errors.CustodyError)
    }
    codes.add(ceremony_drive.EXIT_AWAITING)
    codes.add(ceremony_drive.EXIT_SAS)
    table = set(re.findall(r"^\| (\d+) \|", (ROOT / "docs" / "cli.md").read_text(), re.M))
    epilog = build_parser().epilog or ""
    assert sorted(str(c) for c in codes if str(c) not in table) == []
    assert sorted(str(c) for c in codes if f"{c} " not in epilog) == []
