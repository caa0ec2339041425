"""Driving a ceremony from the command line: the coordinator's key, the inputs given as
files, opening the home for an existing ceremony, the interactive hand-in at a terminal
and the report with its exit code.

At a terminal, shares are handed in one by one through the same headless ceremony session
the TUI uses (:class:`ceremonies.session.CeremonySession`): custodians type their words
with echo off, checked word by word (:mod:`custody_cli.handin_prompt`), or give a share
file's path; each share is checked as it is given (the one share checker,
:mod:`ceremonies.sharecheck`) and the step runs at the quorum. A remote hand-in is held,
not counted, until the coordinator confirms its short authentication string (typed at the
prompt, or ``--confirm-sas``). Exit codes: 0 done, 10 waiting for input (resume later),
11 waiting for the SAS of a remote hand-in, 8 aborted.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from custody.errors import CustodyError
from custody.privatefile import PUBLIC, write_private
from custody_cli import common
from custody_cli import handin_prompt as prompt

EXIT_AWAITING = 10
EXIT_SAS = 11  # waiting: a remote hand-in is held until its SAS is confirmed


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
    confirms = []
    for c in getattr(args, "confirm_sas", []) or []:
        who, sep, words = c.partition("=")
        confirms.append((who.strip(), words) if sep and " " not in who.strip() else ("", c))
    approvals = []
    for f in getattr(args, "approval", []) or []:
        try:
            approvals.append(Approval.from_json(json.loads(Path(f).read_text())))
        except (OSError, ValueError, TranscriptError) as exc:
            raise ConfigError(
                f"{f} is not an approval file", "Use a file written by 'custody ceremony approve'."
            ) from exc
    return Inputs(shares=shares, approvals=approvals, sealed=sealed, confirm_sas=confirms)


def _progress(session: Any) -> str:
    """Per group, the shares counted so far: held from earlier runs and typed here."""
    from ceremonies.runner.status import handin_status
    from ceremonies.sharecheck import LiveCheck, quorum_of

    st = session.state_now()
    if st.share_set is None:
        return ""
    r = session.runner
    held = handin_status(r.dep, r.ceremony_id, now=r.clock()).get("handed_in", [])
    checks = [
        *st.checks,
        *(
            LiveCheck(source=h["custodian"], status="ok", group=h["group"], member=h["member"])
            for h in held
        ),
    ]
    return str(quorum_of(st.share_set, checks).progress())


def _hand_in_one(session: Any, line: str) -> Any:
    """Hand in one share given at the prompt: a file path, or typed words (then its
    envelope). None when the custodian abandoned it or it was rejected before its envelope.

    Raises:
        CustodyError: the file cannot be read, or the session refuses the share.
    """
    from ceremonies.sharecheck import full_text

    if prompt.looks_like_path(line):
        name, text, envelope = _read_typed_path(line)
        return session.hand_in(name, text, envelope)
    got = prompt.type_words(line, session.share_set())
    if got is None:
        return None
    words, c = got
    prompt.say(
        f"  the words match {c.custodian or 'a share'}"
        + (f" (group {c.group}, member {c.member})" if c.group else "")
        + "; now its envelope"
    )
    env = prompt.ask_envelope(c.custodian or "this share")
    if env is None:
        prompt.say("  share abandoned; the words typed for it are forgotten")
        return None
    text = full_text(" ".join(words))
    del words
    return session.hand_in(c.custodian or "typed", text, env)


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
            f"Cannot read the share file {p}: {why}",
            "Check the path (typed with echo off), or type the share's words instead.",
        ) from None
    try:
        return name, text, env.read_bytes()
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unreadable"
        raise ConfigError(
            f"Cannot read its envelope {env}: {why}", "Put NAME.envelope.json beside it."
        ) from None


def _interactive_shares(session: Any) -> bool:
    """At a terminal, custodians hand in their shares one by one through the ceremony
    session (as the TUI does): words typed with echo off and checked word by word, or a
    share file's path. Each share is checked as it is given and its verdict printed; with
    the token open it is sealed on the HSM right away, so a later mistake loses nothing.
    True when the runner moved on to another step (ask again), else False."""

    out = session.outcome
    if out is None or out.status != "awaiting-input" or out.awaiting != "shares":
        return False
    if not sys.stdin.isatty():
        return False
    step = out.step
    holds = session.runner is not None and session.runner.dep.hsm is not None
    prompt.say(
        f"step {step}: custodians, hand in your shares one by one. Type your share's "
        "words at the hidden prompt (echo is off; the first 4 letters of a word are "
        "enough; one word, a few or all on a line), or the path of a NAME.share.txt "
        "(envelope beside it). An empty line at 'share' finishes."
    )
    with prompt.echo_off():
        return _share_loop(session, step, holds)


def _share_loop(session: Any, step: str, holds: bool) -> bool:
    from custody.errors import CustodyError

    given = False
    while True:
        prompt.say(f"progress: {_progress(session)}")
        line = prompt.hidden("share (words or file): ")
        if line is None or not line.strip():
            break
        try:
            st = _hand_in_one(session, line)
            if st is None:
                continue
            given = True
            if st.checks:
                c = st.checks[-1]
                prompt.say(f"  {c.line()}" + ("" if c.status == "ok" else "; not counted"))
            if holds and session.outcome.awaiting == "shares":
                session.submit()  # sealed on the HSM now (a rejected one is recorded)
        except CustodyError as err:
            if session.runner is not None and session.runner.state.finished:
                raise  # the run at the quorum closed the ceremony: not one share's fault
            prompt.say_error(err)
            prompt.say("  only this share is rejected; the others stay counted")
            continue
        o = session.outcome
        if o.awaiting != "shares" or o.step != step:
            return bool(o.status == "awaiting-input")
    if given and not holds:
        session.submit()
        o = session.outcome
        return bool(o.status == "awaiting-input" and o.step != step)
    return False


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
            try:
                dep.login(lambda: common.user_pin(args))
            except CustodyError as err:
                if row is None or row.state != "open":
                    raise
                # the token would not open: the ceremony is untouched; say how to go on
                err.hint = (
                    f"{err.hint} Ceremony {ceremony_id} ({row.kind}) is still open and "
                    f"unchanged: fix the token and run 'custody ceremony resume {ceremony_id}' "
                    f"again, or 'custody ceremony abort {ceremony_id} --key CO.key.pem'."
                ).strip()
                raise
    except BaseException:
        dep.close()
        raise
    return dep


def next_command(cid: str, st: dict[str, Any]) -> str:
    """What to run next for a ceremony in status *st* (``ceremonies.runner.status``)."""
    key = "--key CO.key.pem"
    if st.get("state", "open") != "open":
        return f"none: the ceremony is {st['state']}"
    if st.get("expired"):
        return f"custody ceremony abort {cid} {key}"
    if st.get("waiting_sas"):
        who = st["waiting_sas"][0]["custodian"]
        return (
            f"custody ceremony resume {cid} {key} --confirm-sas "
            + ("'WORDS'" if len(st["waiting_sas"]) == 1 else f"'{who}=WORDS'")
            + f" (the words {who} reads out)"
        )
    if st.get("awaiting") == "shares":
        return (
            f"custody ceremony resume {cid} {key} (custodians type their words at the "
            f"prompt, or --share NAME.share.txt; remote: custody ceremony offer {cid} {key})"
        )
    if st.get("awaiting") == "approvals":
        return f"custody ceremony resume {cid} {key} --approval NAME.approval.json"
    return f"custody ceremony resume {cid} {key}"


def report(
    args: argparse.Namespace, out: Any, sas_waiting: Sequence[Mapping[str, Any]] = ()
) -> int:
    waiting = list(sas_waiting) if out.status == "awaiting-input" else []
    nxt = ""
    if out.status == "awaiting-input":
        nxt = next_command(
            out.ceremony_id, {"awaiting": out.awaiting, "waiting_sas": waiting, "state": "open"}
        )
    if getattr(args, "request_out", None) and out.request:
        doc = json.dumps(out.request, indent=2, sort_keys=True) + "\n"
        write_private(args.request_out, doc.encode(), mode=PUBLIC)
    if args.json:
        common.emit_json({**out.to_json(), "sas_waiting": waiting, "next": nxt or None})
    else:
        print(
            f"ceremony {out.ceremony_id} ({out.kind}): {out.status}"
            + (f", waiting for {out.awaiting} at step {out.step}" if out.awaiting else "")
        )
        for m in out.messages:
            print(f"  {m}")
        for w in waiting:
            print(
                f"  held until its SAS is confirmed: {w['custodian']}'s remote hand-in "
                f"{w['source']} (not counted)"
            )
        print(f"  transcript: {out.bundle}")
        if nxt:
            print(f"  next: {nxt}")
        if out.awaiting:
            print(f"  or roll it back with: custody ceremony abort {out.ceremony_id}")
    if out.status == "aborted":
        return 8
    if waiting:
        return EXIT_SAS
    return EXIT_AWAITING if out.status == "awaiting-input" else 0


def drive(args: argparse.Namespace, runner: Any, inputs: Any) -> int:
    """Run with the files given; at a terminal, ask the coordinator to confirm the SAS of
    each remote hand-in and go on with shares handed in one by one through the same
    ceremony session the TUI uses (:mod:`ceremonies.session`)."""
    from ceremonies.session import CeremonySession

    session = CeremonySession.adopt(runner)
    try:
        session.run(inputs)
        asked: set[str] = set()
        while True:
            if sys.stdin.isatty() and _awaits_shares(session):
                prompt.confirm_sas(session, asked)
            if not _interactive_shares(session):
                break
    except KeyboardInterrupt:
        return interrupted(args, runner)
    out = session.outcome
    waiting = runner.sas_waiting() if out is not None and out.status == "awaiting-input" else []
    return report(args, out, waiting)


def _awaits_shares(session: Any) -> bool:
    o = session.outcome
    return o is not None and o.status == "awaiting-input" and o.awaiting == "shares"


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
