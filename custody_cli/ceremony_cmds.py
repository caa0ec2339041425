"""``custody ceremony ...`` and ``custody demo``: run key ceremonies from the command line.

Every input can be a file (share files with their envelopes beside them, approval files,
passphrase and PIN files), so ceremonies run unattended in scripts and tests; at a terminal
missing shares are prompted for. A ceremony that stops for people (a verification round,
approvals) prints its id; continue it with ``custody ceremony resume ID``.
Exit codes: 0 done, 10 waiting for input (resume later), 11 waiting for the SAS of a remote
hand-in (``--confirm-sas``), others as in docs/cli.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from custody.privatefile import PUBLIC, write_private
from custody_cli import common
from custody_cli.ceremony_drive import drive as _drive
from custody_cli.ceremony_drive import inputs_of as _inputs
from custody_cli.ceremony_drive import open_for as _open_for
from custody_cli.ceremony_drive import report as _report
from custody_cli.ceremony_drive import signer_of as _signer
from custody_cli.ceremony_drive import wants_pin as _wants_pin


def _add_coord(p: argparse.ArgumentParser, *, pin: bool = True) -> None:
    common.add_home(p)
    if pin:
        common.add_pin(p)
    p.add_argument(
        "--key",
        required=True,
        metavar="FILE",
        help="the coordinator's (a super-admin's) NAME.key.pem or NAME.token.json",
    )
    p.add_argument(
        "--passphrase-file",
        metavar="FILE",
        help="passphrase of --key (the token PIN for a NAME.token.json); else "
        "$CUSTODY_PASSPHRASE, else a prompt",
    )
    common.add_json(p)


def _add_inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--share",
        action="append",
        default=[],
        metavar="FILE",
        help="a NAME.share.txt file; its NAME.envelope.json must sit beside it "
        "(repeat per custodian)",
    )
    p.add_argument(
        "--approval",
        action="append",
        default=[],
        metavar="FILE",
        help="a signed approval file from 'custody ceremony approve' (repeat)",
    )
    p.add_argument(
        "--sealed-share",
        action="append",
        default=[],
        metavar="BLOBFILE",
        help="a remote custodian's hand-in ('custody share send' to this "
        "ceremony's offer, see 'custody ceremony offer') (repeat); it is held, not "
        "counted, until its SAS is confirmed",
    )
    p.add_argument(
        "--confirm-sas",
        action="append",
        default=[],
        metavar="WORDS",
        help="confirm a remote hand-in with the 4 words its custodian reads out "
        "('NAME=WORDS' when several wait; repeat); words that differ reject that share",
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    c = sub.add_parser("ceremony", help="key ceremonies: generate, recover, reshare, rotate...")
    cs = c.add_subparsers(dest="ceremony_command", metavar="KIND", required=True)

    p = cs.add_parser(
        "enrol",
        help="add or revoke participants (after the bootstrap: two super-admins, or with "
        "one super-admin a majority of the custodians, approve)",
    )
    _add_coord(p, pin=False)
    p.add_argument(
        "--add",
        action="append",
        default=[],
        metavar="PUBJSON",
        help="a participant's NAME.pub.json to enrol (repeat)",
    )
    p.add_argument("--revoke", action="append", default=[], metavar="NAME")
    _add_inputs(p)
    p.add_argument(
        "--request-out",
        metavar="FILE",
        help="write the approval request here (for the super-admins or custodians who "
        "must approve)",
    )
    p.set_defaults(func=cmd_enrol)

    for kind, helptext in (
        ("generate", "new root key, recovery key and shares"),
        ("reshare", "new custodians/threshold: new RK and new root"),
    ):
        p = cs.add_parser(kind, help=helptext)
        _add_coord(p)
        p.add_argument(
            "--custodian",
            action="append",
            default=[],
            metavar="NAME",
            help="enrolled custodian to receive a share, in share order (repeat)",
        )
        p.add_argument("--threshold", type=int, metavar="T", help="T of N (N = custodians)")
        p.add_argument(
            "--group",
            action="append",
            default=[],
            metavar="T/N",
            help="a group of N custodians needing T (repeat); with --group-threshold",
        )
        p.add_argument("--group-threshold", type=int, default=1, metavar="G")
        p.add_argument(
            "--out",
            required=True,
            metavar="DIR",
            help="where share, envelope and card files are written",
        )
        p.add_argument(
            "--card-format",
            action="append",
            default=[],
            metavar="FMT",
            choices=("svg", "pdf", "png"),
            help="share card format: svg, pdf or png (repeat for several; default: svg and pdf)",
        )
        p.add_argument(
            "--card-size",
            choices=("a6", "a4", "letter"),
            default="a6",
            help="share card page: a6 (default; prints at 100%% on A4 or Letter), a4, letter",
        )
        p.add_argument(
            "--seal-to",
            action="append",
            default=[],
            metavar="PUBJSON|DIR",
            help="the custodians' NAME.pub.json files (or a directory of them): each share is "
            "sealed to its custodian's endorsed encryption key, so this machine never holds "
            "it in plain text (repeat)",
        )
        p.add_argument(
            "--plain-shares",
            action="store_true",
            help="write shares and cards in plain text instead (recorded in the transcript)",
        )
        _add_inputs(p)
        p.set_defaults(func=cmd_start, kind=kind)

    for kind, helptext in (
        ("recover", "restore the root key into a new or emptied token"),
        ("drill", "custodians prove their shares in a scratch token"),
        ("rotate-root", "new root version with custodian approvals"),
    ):
        p = cs.add_parser(kind, help=helptext)
        _add_coord(p)  # drill: PIN optional (needed only to hold shares between runs)
        _add_inputs(p)
        p.add_argument(
            "--request-out", metavar="FILE", help="write the approval request here (rotate-root)"
        )
        p.set_defaults(func=cmd_start, kind=kind)

    p = cs.add_parser(
        "emergency-rotate",
        help="immediate rotation after a suspected compromise (a witness or a second "
        "super-admin approves)",
    )
    _add_coord(p)
    p.add_argument("--reason", required=True, metavar="TEXT")
    p.add_argument(
        "--request-out",
        metavar="FILE",
        help="write the second person's approval request here",
    )
    p.set_defaults(func=cmd_start, kind="emergency-rotate")

    p = cs.add_parser("resume", help="continue an interrupted or waiting ceremony")
    p.add_argument("ceremony_id")
    _add_coord(p)
    _add_inputs(p)
    p.add_argument("--request-out", metavar="FILE")
    p.set_defaults(func=cmd_resume)

    p = cs.add_parser(
        "status",
        help="who has handed in, who is missing, what waits for its SAS, the expiry and "
        "the next command (no key or PIN needed)",
    )
    p.add_argument("ceremony_id")
    common.add_standard(p)
    p.set_defaults(func=cmd_status)

    p = cs.add_parser("offer", help="a signed transport offer for a remote share hand-in")
    p.add_argument("ceremony_id")
    _add_coord(p)
    p.add_argument(
        "--ttl",
        type=int,
        default=900,
        metavar="SECONDS",
        help="validity (default 900, never past the ceremony's expiry)",
    )
    p.add_argument("--out", metavar="FILE", help="also write the offer text here")
    p.set_defaults(func=cmd_offer)

    p = cs.add_parser("abort", help="roll back an unfinished ceremony")
    p.add_argument("ceremony_id")
    _add_coord(p)
    p.add_argument("--reason", default="aborted by the coordinator")
    p.set_defaults(func=cmd_abort)

    p = cs.add_parser("approve", help="sign an approval for a ceremony's action request")
    p.add_argument("request", metavar="REQUEST", help="the request file the coordinator gave")
    p.add_argument(
        "--key",
        required=True,
        metavar="FILE",
        help="your NAME.key.pem, or NAME.token.json for a key on your token",
    )
    p.add_argument(
        "--passphrase-file",
        metavar="FILE",
        help="passphrase of --key (the token PIN for a NAME.token.json); else "
        "$CUSTODY_PASSPHRASE, else a prompt",
    )
    p.add_argument("--out", required=True, metavar="FILE")
    p.add_argument("--name", help="your roster name (default: from the key file name)")
    common.add_json(p)
    p.set_defaults(func=cmd_approve)

    p = cs.add_parser(
        "list",
        help="list ceremonies of this deployment, newest first, with their age and expiry",
    )
    common.add_standard(p)
    p.add_argument("--open", action="store_true", help="only the open ones")
    p.set_defaults(func=cmd_list)

    p = cs.add_parser("drill-status", help="who passed a drill within the policy period")
    common.add_standard(p)
    p.set_defaults(func=cmd_drill_status)

    d = sub.add_parser("demo", help="run the scripted end-to-end ceremony story (no prompts)")
    d.add_argument("--home", metavar="DIR", help="a new directory for the demo deployment")
    common.add_json(d)
    d.set_defaults(func=cmd_demo)


# ----------------------------------------------------------------------------- commands
def cmd_enrol(args: argparse.Namespace) -> int:
    from ceremonies.participants import load_identity
    from ceremonies.roster import Roster
    from ceremonies.runner import CeremonyRunner
    from ceremonies.transcript.model import RosterEntry
    from custody.errors import UsageError

    signer = _signer(args)
    idents = [load_identity(Path(f)) for f in args.add]
    if not idents and not args.revoke:
        raise UsageError("Nothing to enrol or revoke", "Give --add PUBJSON or --revoke NAME.")
    with common.open_home(args, pin=False) as dep:
        import time

        now = int(time.time())
        roster = Roster(dep.store)
        extra: list[RosterEntry] = []
        if not roster.members():
            me = next(
                (i for i in idents if i.public == signer.public and i.alg == signer.alg), None
            )
            if me is None or me.role != "super-admin":
                raise UsageError(
                    "The first enrolment must include the coordinator as a super-admin",
                    "Add your own NAME.pub.json with --add.",
                )
            extra.append(
                RosterEntry(
                    name=me.name,
                    role=me.role,
                    public=me.public,
                    valid_from=now - 60,
                    valid_until=now + 5 * 365 * 86400,
                    alg=me.alg,
                )
            )
        params = {
            "add": [
                {
                    "name": i.name,
                    "role": i.role,
                    "public": i.public.hex(),
                    "fingerprint": i.fingerprint,
                    # recorded (and approved, in the enrol action) when not the default
                    **({} if i.alg == "ed25519" else {"alg": i.alg}),
                }
                for i in idents
            ],
            "revoke": list(args.revoke),
        }
        inputs = _inputs(args)  # an unreadable file is refused before the ceremony opens
        runner = CeremonyRunner.start(
            dep,
            "enrol",
            signer,
            params=params,
            extra_roster=extra,  # the quorum is the runner's (required_thresholds)
        )
        return _drive(args, runner, inputs)


def _scheme(args: argparse.Namespace) -> dict[str, Any]:
    from custody.errors import UsageError

    n = len(args.custodian)
    if args.group:
        groups = []
        for g in args.group:
            t, _, m = g.partition("/")
            try:
                groups.append([int(t), int(m)])
            except ValueError:
                raise UsageError(
                    f"--group {g} is not T/N", "For example --group 2/3 (2 of 3 custodians)."
                ) from None
        if sum(m for _, m in groups) != n:
            raise UsageError(
                "The groups need as many --custodian as their sizes add up to",
                f"Give {sum(m for _, m in groups)} custodians.",
            )
        return {"groups": groups, "group_threshold": args.group_threshold}
    if not args.threshold or not 1 <= args.threshold <= n:
        raise UsageError(
            "Give --threshold T with 1 <= T <= number of --custodian",
            "For example: --threshold 3 with 5 custodians.",
        )
    if args.threshold == 1 and n > 1:
        raise UsageError("1-of-N is not allowed (SLIP-0039)", "Use T >= 2.")
    return {"groups": [[args.threshold, n]], "group_threshold": 1}


def _delivery(args: argparse.Namespace, dep: Any) -> dict[str, Any]:
    """How shares leave this machine: sealed to each custodian (the default, needs
    ``--seal-to``) or, only with ``--plain-shares``, in plain text
    (:func:`ceremonies.delivery.delivery_params`, shared with the TUI)."""
    from ceremonies.delivery import delivery_params

    return delivery_params(dep.store, args.custodian, args.seal_to, plain=args.plain_shares)


def cmd_start(args: argparse.Namespace) -> int:
    from ceremonies.runner import CeremonyRunner

    kind = args.kind
    signer = _signer(args)
    params: dict[str, Any] = {}
    if kind in ("generate", "reshare"):
        params = {
            "custodians": list(args.custodian),
            "out": str(Path(args.out).resolve()),
            "card_formats": list(dict.fromkeys(args.card_format)) or ["svg", "pdf"],
            "card_size": args.card_size,
            **_scheme(args),
        }
    if kind == "emergency-rotate":
        params = {"reason": args.reason}
    inputs = _inputs(args)  # an unreadable file is refused before the ceremony opens
    with common.open_home(args, pin=_wants_pin(args, kind)) as dep:
        if kind in ("generate", "reshare"):
            params.update(_delivery(args, dep))
        # the runner sets rotate-root's custodian quorum (the active share set's holders)
        runner = CeremonyRunner.start(dep, kind, signer, params=params)
        return _drive(args, runner, inputs)


def cmd_resume(args: argparse.Namespace) -> int:
    from ceremonies.runner import CeremonyRunner

    signer = _signer(args)
    inputs = _inputs(args)
    with _open_for(args, args.ceremony_id) as dep:
        runner = CeremonyRunner.resume(dep, args.ceremony_id, signer)
        return _drive(args, runner, inputs)


def cmd_status(args: argparse.Namespace) -> int:
    import time

    from ceremonies.runner.status import handin_status
    from custody_cli.ceremony_drive import next_command

    now = int(time.time())
    with common.open_home(args, pin=False) as dep:
        st = handin_status(dep, args.ceremony_id, now=now)
    st["next"] = next_command(args.ceremony_id, st)
    if args.json:
        common.emit_json(st)
        return 0

    def who(rows: list[dict[str, Any]]) -> str:
        return ", ".join(f"{h['custodian']} (group {h['group']})" for h in rows) or "none"

    until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(st["expires_at"]))
    left = st["expires_at"] - now
    print(
        f"ceremony {st['ceremony_id']} ({st['kind']}): {st['state']}"
        + (f", waiting for {st['awaiting']} at step {st['step']}" if st["awaiting"] else "")
        + (f", at step {st['step']}" if st["step"] and not st["awaiting"] else "")
    )
    if st["state"] == "open":
        print(
            f"  expires: {until} "
            + ("(expired)" if st["expired"] else f"(in {left // 60} min {left % 60} s)")
        )
    if "progress" in st:
        print(f"  progress: {st['progress']}" + (" (quorum met)" if st["quorum_met"] else ""))
        print(f"  handed in: {who(st['handed_in'])}")
        if st["waiting_sas"]:
            print(
                "  held until their SAS is confirmed (not counted): "
                + ", ".join(f"{w['custodian']} ({w['source']})" for w in st["waiting_sas"])
            )
        print(f"  missing: {who(st['missing'])}")
        if st["rejected"]:
            print(
                "  rejected in this step: "
                + ", ".join(f"{r['custodian']} ({r['reason']})" for r in st["rejected"])
            )
    print(f"  next: {st['next']}")
    return 0


def cmd_offer(args: argparse.Namespace) -> int:
    import time

    from ceremonies.runner import CeremonyRunner
    from custody.errors import UsageError
    from custody.shares import card

    if args.ttl <= 0:
        raise UsageError("--ttl must be positive", "For example --ttl 900.")
    signer = _signer(args)
    with common.open_home(args, pin=True) as dep:
        runner = CeremonyRunner.resume(dep, args.ceremony_id, signer)
        o = runner.offer(ttl=args.ttl)
    if args.out:
        write_private(args.out, (o["offer"] + "\n").encode(), mode=PUBLIC)
    if args.json:
        common.emit_json({"ok": True, "ceremony_id": args.ceremony_id, **o})
        return 0
    print(o["offer"])
    qr = card.screen_qr_matrix(card.offer_qr_content(o["offer"]))  # the compact form, level L
    print(card.half_blocks(qr, dark_foreground=False), file=sys.stderr)
    until = time.strftime("%H:%M:%S", time.localtime(o["expires"]))
    print(
        f"offer for session (ceremony) {o['session']}, share set {o['share_set']} epoch "
        f"{o['epoch']}, step {o['step']}, valid until {until}; coordinator "
        f"{o['coordinator']}",
        file=sys.stderr,
    )
    print(
        "The custodian runs 'custody share send SHARE --envelope ENV --offer OFFER --trust "
        f"COORDINATOR.pub.json --session {o['session']} --out BLOB' and reads out the "
        "short authentication string (4 words). 'custody ceremony resume ID "
        "--sealed-share BLOB' holds the share until you type those words (or give "
        "--confirm-sas 'WORDS'); words that differ reject it.",
        file=sys.stderr,
    )
    return 0


def cmd_abort(args: argparse.Namespace) -> int:
    from ceremonies.runner import CeremonyRunner

    signer = _signer(args)
    with _open_for(args, args.ceremony_id) as dep:
        runner = CeremonyRunner.resume(dep, args.ceremony_id, signer)
        out = runner.abort(args.reason)
    _report(args, out)
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    import time

    from ceremonies.transcript.records import Approval
    from custody.errors import ConfigError

    try:
        req = json.loads(Path(args.request).read_text())
        if req.get("type") != "custody-approval-request":
            raise ValueError("type")
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{args.request} is not an approval request",
            "Use the request file the coordinator wrote (--request-out).",
        ) from exc
    signer = _signer(args)
    a = Approval.create(
        signer,
        ceremony_id=req["ceremony_id"],
        action=req["action"],
        action_id=req["action_id"],
        digest=req["action_digest"],
        now=int(time.time()),
        window=int(req.get("window", 600)),
    )
    write_private(args.out, (json.dumps(a.to_json(), sort_keys=True) + "\n").encode(), mode=PUBLIC)
    if args.json:
        common.emit_json(
            {
                "ok": True,
                "approver": a.approver,
                "action": a.action,
                "action_id": a.action_id,
                "expires_at": a.expires_at,
                "out": args.out,
            }
        )
    else:
        print(
            f"{a.approver} approved {a.action} {a.action_id} (digest {a.action_digest[:16]}...)"
            f", valid until {a.expires_at}; wrote {args.out}"
        )
    return 0


def _span(seconds: int) -> str:
    """A duration for people: 45s, 12m, 3h05m, 2d04h."""
    s = abs(int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def cmd_list(args: argparse.Namespace) -> int:
    from ceremonies.runner import open_ceremonies

    with common.open_home(args, pin=False) as dep:
        rows = open_ceremonies(dep)
    if args.open:
        rows = [r for r in rows if r["state"] == "open"]
    if args.json:
        common.emit_json(rows)
        return 0
    if not rows:
        print("no open ceremony" if args.open else "no ceremony yet")
        return 0
    print("ID\tKIND\tSTATE\tAGE\tEXPIRES\tTRANSCRIPT")
    for r in rows:
        if r["expires_in"] is None:
            exp = "-"
        elif r["expired"]:
            exp = f"expired {_span(r['expires_in'])} ago"
        else:
            exp = f"in {_span(r['expires_in'])}"
        print(f"{r['id']}\t{r['kind']}\t{r['state']}\t{_span(r['age'])}\t{exp}\t{r['bundle']}")
    return 0


def cmd_drill_status(args: argparse.Namespace) -> int:
    import time

    from ceremonies.runner.steps import drill_status

    with common.open_home(args, pin=False) as dep:
        st = drill_status(dep.store, now=int(time.time()), period_days=dep.config.drill_period_days)
    if args.json:
        common.emit_json(st)
    else:
        print(f"passed: {', '.join(st['passed']) or 'none'} (want {st['needed']})")
        if st["warning"]:
            print(f"warning: {st['warning']}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from custody_cli.demo import run_demo

    return run_demo(home=args.home, as_json=args.json)
