"""Driving a ceremony from the command line: the coordinator's key, the inputs given as
files, opening the home for an existing ceremony, the interactive hand-in at a terminal
and the report with its exit code.

At a terminal, shares are handed in one by one through the same headless ceremony session
the TUI uses (:class:`ceremonies.session.CeremonySession`): each share file is checked as
it is given (the one share checker, :mod:`ceremonies.sharecheck`) and the step runs at the
quorum. Exit codes: 0 done, 10 waiting for input (resume later), 8 aborted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from custody.privatefile import PUBLIC, write_private
from custody_cli import common

EXIT_AWAITING = 10


def signer_of(args: argparse.Namespace) -> Any:
    """The --key signer. A NAME.token.json key is on the participant's token: the secret
    from --passphrase-file / $CUSTODY_PASSPHRASE / the prompt is then the token PIN, and
    the token is closed when the command exits."""
    import atexit

    from ceremonies.participants import TokenSigner, is_token_ref, load_signer
    from custody.secretsource import read_secret

    token = is_token_ref(Path(args.key))
    pw = read_secret(
        what="token user PIN" if token else "key passphrase",
        file=args.passphrase_file,
        env="CUSTODY_PASSPHRASE",
    )
    signer = load_signer(Path(args.key), pw, name=getattr(args, "name", None))
    if isinstance(signer, TokenSigner):
        atexit.register(signer.close)
    return signer


def inputs_of(args: argparse.Namespace) -> Any:
    from ceremonies.runner import Inputs, ShareInput
    from ceremonies.transcript.records import Approval
    from custody.errors import ConfigError, TranscriptError

    shares = []
    for f in getattr(args, "share", []) or []:
        p = Path(f)
        name = p.name.removesuffix(".txt").removesuffix(".share")
        env = p.with_name(f"{name}.envelope.json")
        try:
            shares.append(
                ShareInput(source=name, text=p.read_text().strip(), envelope=env.read_bytes())
            )
        except (OSError, ValueError) as exc:  # missing, a directory, not text
            raise ConfigError(
                f"Cannot read share {p} or its envelope {env.name}",
                "Put NAME.envelope.json beside NAME.share.txt.",
            ) from exc
    sealed = []
    for f in getattr(args, "sealed_share", []) or []:
        try:
            sealed.append((Path(f).name, Path(f).read_text().strip()))
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"Cannot read the sealed share {f}",
                "Give the file written by 'custody share send --out'.",
            ) from exc
    approvals = []
    for f in getattr(args, "approval", []) or []:
        try:
            approvals.append(Approval.from_json(json.loads(Path(f).read_text())))
        except (OSError, ValueError, TranscriptError) as exc:
            raise ConfigError(
                f"{f} is not an approval file", "Use a file written by 'custody ceremony approve'."
            ) from exc
    return Inputs(shares=shares, approvals=approvals, sealed=sealed)


def _read_typed_path(line: str) -> tuple[str, str, bytes]:
    """(name, share text, envelope) of the share file a person typed at the prompt.

    Raises:
        ConfigError: the file or its envelope cannot be read as a share (missing, a
            directory, not text, a name that is not a path).
    """
    from custody.errors import ConfigError

    line = line.strip()
    if len(line) > 1 and line[0] == line[-1] and line[0] in "'\"":  # a pasted, quoted path
        line = line[1:-1]
    p = Path(line).expanduser()
    name = p.name.removesuffix(".txt").removesuffix(".share")
    env = p.with_name(f"{name}.envelope.json")
    try:
        text = p.read_text().strip()
    except (OSError, ValueError) as exc:  # ValueError: not UTF-8, or a NUL in the path
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a share file"
        raise ConfigError(
            f"Cannot read {p}: {why}", "Type the path of a NAME.share.txt file."
        ) from None
    try:
        return name, text, env.read_bytes()
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unreadable"
        raise ConfigError(
            f"Cannot read its envelope {env}: {why}", "Put NAME.envelope.json beside it."
        ) from None


def _interactive_shares(session: Any) -> bool:
    """At a terminal, hand in share files one by one through the ceremony session (as the
    TUI does): each is checked as it is given and its verdict printed; at the quorum the
    runner runs, else an empty line (or end of input) hands in those given. A path that
    cannot be read, or a share that is incomplete, is refused alone, with its reason, and
    the prompt goes on. False when none was given."""
    from custody.errors import ConfigError

    out = session.outcome
    if out is None or out.status != "awaiting-input" or out.awaiting != "shares":
        return False
    if not sys.stdin.isatty():
        return False
    print(
        f"ceremony {out.ceremony_id} ({out.kind}), step {out.step}: custodians, hand in your "
        "shares. Enter the path of each NAME.share.txt (envelope beside it); empty line to "
        "finish, Ctrl-C to stop.",
        file=sys.stderr,
    )
    given = False
    while True:
        try:
            line = input("share file: ").strip()
        except EOFError:
            line = ""
        if not line:
            break
        try:
            name, text, env = _read_typed_path(line)
        except ConfigError as err:
            print(f"  refused: {err.title}. {err.hint}", file=sys.stderr)
            continue
        check = session.check(name, text, env)
        if check.status == "incomplete":
            print(f"  refused: the share of {name} is incomplete: {check.reason}", file=sys.stderr)
            continue
        st = session.hand_in(name, text, env)  # at the quorum the step runs: errors stop us
        given = True
        if st.checks:
            print(f"  {st.checks[-1].line()}", file=sys.stderr)
        if session.outcome.awaiting != "shares":
            return True  # the quorum was met: the runner ran
    if given:
        session.submit()
    return given


NO_HSM_KINDS = ("enrol", "drill")  # run without the deployment token unless a PIN is given


def wants_pin(args: argparse.Namespace, kind: str) -> bool:
    import os

    if kind not in NO_HSM_KINDS:
        return True
    return bool(getattr(args, "pin_file", None) or os.environ.get("CUSTODY_PIN"))


def open_for(args: argparse.Namespace, ceremony_id: str) -> Any:
    """Open the deployment for an existing ceremony, logged in to the token when its kind
    needs it (the one door; the kind is read from the store before any PIN is asked)."""
    dep = common.open_home(args, pin=False)
    try:
        row = dep.store.ceremony(ceremony_id)
        if wants_pin(args, row.kind if row is not None else "unknown"):
            dep.login(lambda: common.user_pin(args))
    except BaseException:
        dep.close()
        raise
    return dep


def report(args: argparse.Namespace, out: Any) -> int:
    if getattr(args, "request_out", None) and out.request:
        doc = json.dumps(out.request, indent=2, sort_keys=True) + "\n"
        write_private(args.request_out, doc.encode(), mode=PUBLIC)
    if args.json:
        common.emit_json(out.to_json())
    else:
        print(
            f"ceremony {out.ceremony_id} ({out.kind}): {out.status}"
            + (f", waiting for {out.awaiting} at step {out.step}" if out.awaiting else "")
        )
        for m in out.messages:
            print(f"  {m}")
        print(f"  transcript: {out.bundle}")
        if out.awaiting:
            print(f"  continue with: custody ceremony resume {out.ceremony_id} ...")
            print(f"  or roll it back with: custody ceremony abort {out.ceremony_id}")
    if out.status == "aborted":
        return 8
    return EXIT_AWAITING if out.status == "awaiting-input" else 0


def drive(args: argparse.Namespace, runner: Any, inputs: Any) -> int:
    """Run with the files given; at a terminal, go on with shares handed in one by one
    through the same ceremony session the TUI uses (:mod:`ceremonies.session`)."""
    from ceremonies.session import CeremonySession

    session = CeremonySession.adopt(runner)
    try:
        session.run(inputs)
        while _interactive_shares(session):
            pass
    except KeyboardInterrupt:
        return interrupted(args, runner)
    return report(args, session.outcome)


EXIT_INTERRUPTED = 130


def interrupted(args: argparse.Namespace, runner: Any) -> int:
    """Ctrl-C during a ceremony command: say which ceremony, in what state, and what to run
    next. A ceremony that has changed nothing yet is closed as aborted first (the runner
    does it when the interrupt hits one of its steps); any other stays open, consistent
    (a step begun is redone on resume). Exit 130."""
    if not runner.state.finished and runner.untouched():
        runner.stopped(KeyboardInterrupt())  # closes it as aborted
    cid, kind = runner.ceremony_id, runner.state.kind
    if runner.state.status == "aborted":
        hint = (
            f"Nothing was changed: ceremony {cid} ({kind}) was closed as aborted. Start a new "
            "one when ready."
        )
    else:
        hint = (
            f"Ceremony {cid} ({kind}) is still open ({runner.done_so_far()}). {runner.next_steps()}"
        )
    if getattr(args, "json", False):
        doc = {
            "ok": False,
            "error": "Interrupted",
            "title": "interrupted",
            "hint": hint,
            "ceremony_id": cid,
            "status": runner.state.status,
        }
        common.emit_json(doc)
    print("error: interrupted", file=sys.stderr)
    print(f"hint: {hint}", file=sys.stderr)
    return EXIT_INTERRUPTED
