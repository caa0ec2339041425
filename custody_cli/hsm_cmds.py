"""``custody hsm selftest``: what the deployment's token offers, and whether it works.
``custody hsm provision``: a replacement token for the embedded default (a lost token).

The PKCS#11 adapter is imported inside the handler, so ``custody --help`` never loads
``pkcs11``. The selftest creates session objects only; nothing is left on the token.
"""

from __future__ import annotations

import argparse
from contextlib import closing
from dataclasses import asdict

from custody_cli import common


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "hsm",
        help="inspect the deployment's PKCS#11 token",
        description="Commands about the deployment's PKCS#11 token (see docs/hsm.md).",
    )
    hsm_sub = p.add_subparsers(dest="hsm_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: _help(p))

    st = hsm_sub.add_parser(
        "selftest",
        help="list the token's mechanisms and run functional checks",
        description=(
            "Log in to the token named in custody.toml [hsm], report which mechanisms custody "
            "needs are offered, and run functional checks (random, AES key generation, "
            "AES-GCM, AES key wrap, KCV, signing, ECDH) on temporary session objects. Each "
            "check reports pass, fail or missing, and the mechanisms custody chose for the "
            "token by these known-answer tests are listed. Exit 0 when every check custody "
            "needs passes, 5 otherwise."
        ),
    )
    common.add_standard(st, pin=True)
    st.set_defaults(func=cmd_selftest)

    pv = hsm_sub.add_parser(
        "provision",
        help="create a replacement SoftHSMv2 token for the embedded default",
        description=(
            "Create and initialise a new, empty SoftHSMv2 token for this home's embedded "
            "default, when the old token was lost or destroyed (docs/recovery.md). The user "
            "PIN and SO PIN come from --pin-file ('pin=' and 'so_pin=' lines, mode 0600), "
            "CUSTODY_PIN / CUSTODY_SO_PIN, or a prompt; they are typed into softhsm2-util "
            "through a pseudo-terminal, never put on a command line. Refused when the token "
            "is still there, and for a home on a real HSM (use the vendor's tool). Then run "
            "'custody ceremony recover'."
        ),
    )
    common.add_standard(pv, pin=True)
    pv.set_defaults(func=cmd_provision)


def _help(p: argparse.ArgumentParser) -> int:
    p.print_help()
    return 2


def cmd_selftest(args: argparse.Namespace) -> int:
    """Run the token selftest.

    Returns:
        0 when every check passed, 5 (the HSM exit code) when one failed.

    Raises:
        ConfigError: no deployment, or no PIN source.
        HsmError: the token could not be reached or logged into.
    """
    from custody.errors import HsmError

    with closing(common.open_home_token(args)) as hsm:
        report = hsm.selftest()
    if args.json:
        common.emit_json({"ok": report.ok, **asdict(report)})
    else:
        t = report.token
        print(f"token      {t.label!r} in slot {t.slot_id} ({t.manufacturer}, {t.model})")
        print(f"module     {t.module} (library {t.library_version})")
        print(f"signing    {report.signing_algorithm or 'none available'}")
        print("mechanisms")
        for name, offered in report.mechanisms.items():
            print(f"  {'yes' if offered else 'no ':3}  CKM_{name}")
        print("checks")
        results = report.results or {k: "pass" if v else "fail" for k, v in report.checks.items()}
        for name, status in results.items():
            note = f"  ({report.errors[name]})" if name in report.errors else ""
            print(f"  {status:7} {name}{note}")
        if report.choices:
            print("uses")
            for what, how in report.choices.items():
                print(f"  {what:18} {how}")
        print("selftest passed" if report.ok else "selftest FAILED")
    return 0 if report.ok else HsmError.exit_code


def cmd_provision(args: argparse.Namespace) -> int:
    """Provision a replacement embedded token.

    Raises:
        ConfigError: no deployment, no PIN source, softhsm2-util missing.
        UsageError: the home uses an external HSM, or its token is still there.
        HsmError: SoftHSMv2 refused.
    """
    from custody.errors import UsageError
    from custody.hsm import softhsm

    home = common.home_of(args)
    cfg = home.load()
    if not cfg.hsm.embedded:
        raise UsageError(
            f"This home uses an external PKCS#11 module ({cfg.hsm.module})",
            f"Initialise a token labelled {cfg.hsm.token_label!r} with the HSM vendor's tool "
            "(docs/recovery.md, 'A real HSM'), then run 'custody status'.",
        )
    conf = softhsm.ensure_conf(home.root)
    label = cfg.hsm.token_label
    if label in softhsm.token_labels(conf):
        raise UsageError(
            f"The token {label!r} is still there",
            "Nothing was changed. 'custody status' compares it with the store; a token that "
            "lost its keys needs 'custody ceremony recover', not a new token.",
        )
    so = common.so_pin(args, confirm=True)
    user = common.user_pin(args, confirm=True)
    softhsm.init_token(conf, label, so, user)
    if args.json:
        common.emit_json({"ok": True, "home": str(home.root), "token_label": label})
    else:
        print(f"Provisioned an empty token {label!r} for {home.root}")
        print("Next:")
        print("  1. 'custody status' (it shows the roots to restore as ALARM lines)")
        print("  2. 'custody ceremony recover' with a quorum of custodian shares")
    return 0
