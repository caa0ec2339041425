"""``custody agent``: hand over to the agent's own entry point (``python -m custody_client.agent``).

The agent talks to ``custody serve`` only through the client library, and no custody package
imports the client library (an import-linter contract), so this command only parses the
options (for ``--help`` and the docs' checks) and replaces the process with the agent: same
interpreter, same working directory and environment (so ``$CUSTODY_TOKEN`` reaches it, and
never argv). See docs/agent.md.
"""

from __future__ import annotations

import argparse
import os
import sys

_VALUES = (
    "config", "url", "ca", "token_file", "cert", "key", "poll", "reload_command", "signal",
    "pid", "pid_file",
)  # fmt: skip
_LISTS = ("secret", "template")
_FLAGS = ("once", "json")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "agent",
        help="keep rendered secret files fresh for a service on this host (atomic, 0600, ack)",
        description="Read secrets from custody serve with the service's token (--token-file, "
        "0600, or $CUSTODY_TOKEN) or client certificate, write each file atomically with mode "
        "0600 (never through a symlink, never into a directory others may write), reload or "
        "signal the service, acknowledge the versions it now serves, and poll for rotations. "
        "--once renders once and exits. See docs/agent.md.",
    )
    p.add_argument("--config", metavar="TOML", help="agent.toml (see docs/agent.md)")
    p.add_argument("--url", metavar="URL", help="https://host:port of custody serve")
    p.add_argument("--ca", metavar="PEM", help="CA that signed the server's certificate")
    p.add_argument("--token-file", metavar="FILE", help="the service's token (0600)")
    p.add_argument("--cert", metavar="PEM", help="client certificate (mutual TLS)")
    p.add_argument("--key", metavar="PEM", help="the client certificate's key")
    p.add_argument(
        "--secret", action="append", default=[], metavar="custody://ENV/PATH=FILE",
        help="write the secret's value to FILE (repeat)",
    )  # fmt: skip
    p.add_argument(
        "--template", action="append", default=[], metavar="SRC=FILE",
        help="render SRC's custody://ENV/PATH references into FILE (repeat)",
    )  # fmt: skip
    p.add_argument("--poll", metavar="SECONDS", help="check period (30)")
    p.add_argument(
        "--reload-command",
        metavar="CMD",
        help="run CMD (split like a shell would, but no shell) after a file changed",
    )
    p.add_argument("--signal", metavar="SIG", help="send SIG (e.g. HUP) after a change")
    p.add_argument("--pid", metavar="PID", help="the process to signal")
    p.add_argument("--pid-file", metavar="FILE", help="file holding the process id to signal")
    p.add_argument("--once", action="store_true", help="render once and exit (cron, tests)")
    p.add_argument("--json", action="store_true", help="with --once: print a JSON summary")
    p.set_defaults(func=cmd_agent)


def agent_argv(args: argparse.Namespace) -> list[str]:
    """The ``python -m custody_client.agent`` argument list for parsed ``custody agent`` args."""
    argv = [sys.executable, "-m", "custody_client.agent"]
    for name in _VALUES:
        v = getattr(args, name, None)
        if v is not None:
            argv += ["--" + name.replace("_", "-"), str(v)]
    for name in _LISTS:
        for v in getattr(args, name):
            argv += ["--" + name, v]
    argv += ["--" + name for name in _FLAGS if getattr(args, name)]
    return argv


def cmd_agent(args: argparse.Namespace) -> int:
    argv = agent_argv(args)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)  # noqa: S606 - our own interpreter, an argument list
