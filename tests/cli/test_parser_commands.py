"""``custody_cli.main`` builds only the parser of the command group that argv names
(custody_cli.COMMAND_OF): the table must be exactly what the modules register, and the
reduced parser must parse and explain each command exactly as the whole parser does."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

import custody_cli
from custody_cli import COMMAND_MODULES, COMMAND_OF, build_parser, command_module, main
from tests.conftest import cli_env


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _helps(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, str]:
    """The help text of every (sub)command under *parser*, by its path."""
    out = {prefix: parser.format_help()}
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, p in a.choices.items():
                out.update(_helps(p, f"{prefix} {name}".strip()))
    return out


def test_the_table_is_what_each_module_registers_in_help_order():
    registered: dict[str, str] = {}
    for group in COMMAND_MODULES:
        parser = custody_cli._Parser(prog="custody")
        command_module(group).register(parser.add_subparsers(dest="command"))
        for name in _commands(parser):
            registered[name] = group
    assert registered == COMMAND_OF
    assert list(COMMAND_OF) == list(_commands(build_parser()))


@pytest.mark.parametrize("command", sorted(COMMAND_OF))
def test_a_reduced_parser_explains_its_command_as_the_whole_parser(command):
    whole = _helps(_commands(build_parser())[command], command)
    reduced = _helps(_commands(build_parser(command))[command], command)
    assert reduced == whole
    assert len(whole) >= 1 and all(text.startswith("usage: custody") for text in whole.values())


def test_anything_but_a_known_command_gets_the_whole_parser():
    names = list(_commands(build_parser()))
    for argv0 in (None, "-h", "--help", "nosuch", "KEK"):
        assert list(_commands(build_parser(argv0))) == names


def test_no_command_prints_the_whole_help(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert all(f"    {name}" in out for name in COMMAND_OF), out


def _outcome(parser: argparse.ArgumentParser, argv: list[str], capsys) -> tuple[object, str]:
    try:
        ns = vars(parser.parse_args(argv))
    except SystemExit as exc:
        return ("exit", exc.code), capsys.readouterr().err
    ns.pop("func", None)
    return ns, capsys.readouterr().err


@pytest.mark.parametrize("command", sorted(COMMAND_OF))
def test_a_bare_or_bad_action_is_the_same_outcome(command, capsys):
    for argv in ([command], [command, "nosuch"], [command, "--nosuch"]):
        reduced = _outcome(build_parser(command), argv, capsys)
        assert reduced == _outcome(build_parser(), argv, capsys), argv


def test_a_command_imports_only_its_own_group():
    """Run as the CLI runs: a fresh interpreter, ``custody kek --help``."""
    code = (
        "import sys, custody_cli\n"
        "try:\n    custody_cli.main(['kek', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.endswith('_cmds')))"
    )
    r = subprocess.run([sys.executable, "-c", code], env=cli_env(), capture_output=True,
                       text=True, timeout=60, check=False)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "['custody_cli.key_cmds']"
    with pytest.raises(ValueError):
        command_module("os")
