"""``custody hsm selftest``: what the deployment's token offers, and whether it works.

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
