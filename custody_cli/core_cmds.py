"""``custody init`` and ``custody status``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from custody.errors import CustodyError
from custody_cli import common


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "init",
        help="create a deployment (config, SQLite store, SoftHSMv2 token)",
        description=(
            "Create a custody deployment in --home. By default custody provisions its own "
            "SoftHSMv2 token under the home (the embedded default). With --module it uses a "
            "real PKCS#11 HSM instead. PINs come from --pin-file (lines 'pin=...' and "
            "'so_pin=...'), CUSTODY_PIN / CUSTODY_SO_PIN, or a prompt."
        ),
    )
    common.add_home(p)
    common.add_pin(p)
    p.add_argument("--module", metavar="PATH", help="PKCS#11 module of a real HSM")
    p.add_argument("--token-label", metavar="LABEL", help="token label on that HSM")
    p.add_argument("--slot", type=int, metavar="N", help="slot id on that HSM")
    p.add_argument(
        "--store",
        metavar="URL",
        help="a PostgreSQL store, postgresql://USER@HOST[:PORT]/DB[?sslmode=verify-full] "
        "(no password in the URL), instead of the embedded SQLite file",
    )
    p.add_argument(
        "--store-password-file",
        metavar="FILE",
        help="a 0600 file with the PostgreSQL store's password (else CUSTODY_STORE_PASSWORD, "
        "PGPASSWORD, ~/.pgpass or a prompt)",
    )
    p.add_argument(
        "--dev-root",
        action="store_true",
        help="also generate a root key with NO recovery shares (development only)",
    )
    common.add_json(p)
    p.set_defaults(func=cmd_init)

    p = sub.add_parser(
        "status",
        help="show the home, the token, root and KEK versions, object counts",
        description=(
            "Show the deployment. The token is checked when a PIN is available: its root keys "
            "are compared with the store, and a missing, unknown or mismatched root is an "
            "ALARM naming the command that fixes it. Exit 0 when all is well, 5 when the "
            "token is unreachable, 6 on an alarm."
        ),
    )
    common.add_home(p)
    common.add_pin(p)
    p.add_argument("--no-token", action="store_true", help="do not log in to the token")
    common.add_json(p)
    p.set_defaults(func=cmd_status)


def cmd_init(args: argparse.Namespace) -> int:
    from custody.config import HsmConfig
    from custody.deployment import init_deployment, refuse_existing

    home = common.home_of(args)
    refuse_existing(home)  # before asking for any PIN
    hsm = None
    if args.module:
        if not args.token_label:
            from custody.errors import UsageError

            raise UsageError("--module needs --token-label", "Name the token on the HSM.")
        hsm = HsmConfig(module=args.module, token_label=args.token_label, slot=args.slot)
    user_pin = common.user_pin(args, confirm=True)
    so_pin = None if hsm else common.so_pin(args, confirm=True)
    pwfile = args.store_password_file
    cfg = init_deployment(
        home,
        user_pin=user_pin,
        so_pin=so_pin,
        hsm=hsm,
        dev_root=args.dev_root,
        store=args.store,
        store_password_file=None if pwfile is None else home.rel(Path(pwfile).resolve()),
    )
    if args.json:
        common.emit_json(
            {
                "ok": True,
                "home": str(home.root),
                "deployment_id": cfg.deployment_id,
                "embedded": cfg.hsm.embedded,
                "dev_root": args.dev_root,
            }
        )
    else:
        kind = "embedded SoftHSMv2 token" if cfg.hsm.embedded else f"HSM module {cfg.hsm.module}"
        print(f"Created deployment {cfg.deployment_id} in {home.root}")
        print(f"  token: {cfg.hsm.token_label!r} on the {kind}")
        if cfg.store is not None:
            print(f"  store: PostgreSQL {cfg.store}")
        if args.dev_root:
            print("  WARNING: development root key with no recovery shares")
        if not args.dev_root:
            print("Next:")
            print("  1. each participant: 'custody participant new NAME --role ROLE --out DIR'")
            print("  2. 'custody ceremony enrol --key CO.key.pem --add NAME.pub.json ...'")
            print("     (the bootstrap enrols the first super-admins and custodians)")
            print("  3. 'custody ceremony generate' to create the root key and custodian shares")
    return 0


def gather_status(args: argparse.Namespace) -> dict[str, Any]:
    from custody.secretsource import read_secret
    from custody.status import deployment_status

    pin = None
    if not args.no_token:
        try:
            pin = read_secret(
                what="token user PIN",
                file=args.pin_file,
                file_key="pin",
                env="CUSTODY_PIN",
                prompt=False,
            )
        except CustodyError:
            pin = None
    return deployment_status(common.home_of(args), pin)


def _status_exit(st: dict[str, Any]) -> int:
    from custody.errors import HsmError
    from custody.status import ALARM_EXIT

    if st["hsm"]["reachable"] is False:
        return HsmError.exit_code
    return ALARM_EXIT if st.get("alarms") else 0


def cmd_status(args: argparse.Namespace) -> int:
    st = gather_status(args)
    if args.json:
        common.emit_json(st)
        return _status_exit(st)
    hsm = st["hsm"]
    print(f"home        {st['home']}")
    print(f"deployment  {st['deployment_id']}")
    kind = "embedded SoftHSMv2" if hsm["embedded"] else "external PKCS#11"
    print(f"hsm module  {hsm['module']} ({kind})")
    reach = {
        True: "reachable",
        False: f"UNREACHABLE: {hsm.get('error')}",
        None: hsm.get("note", "not checked"),
    }
    if hsm["reachable"] and st["alarms"]:
        reach[True] = f"reachable, but it does not match the store ({len(st['alarms'])} alarm(s))"
    print(f"token       {hsm['token_label']}: {reach[hsm['reachable']]}")
    if hsm.get("hint") and hsm["reachable"] is False:
        print(f"            hint: {hsm['hint']}")
    for a in st["alarms"]:
        print(f"ALARM       {a['text']}")
    if st["dev_root"]:
        print("WARNING     development root key: no recovery shares exist")
    exp = st.get("offline_export")
    if exp is not None and not exp["current"]:
        since = f"last one {exp['at']}" if exp["at"] else "none yet"
        print(
            f"WARNING     the offline root export lacks {', '.join(exp['missing'])} ({since}): "
            "run `custody root export` (docs/recovery.md)"
        )
    if not st["roots"]:
        print("root        none yet (run 'custody ceremony generate')")
    for r in st["roots"]:
        name = f"root/v{r['version']}"
        print(f"{name:<11} {r['state']:<18} kcv {r['kcv']}  age {r['age_days']}d")
    for k in st["keks"]:
        name = f"{k['branch']}/v{k['version']}"
        print(
            f"{name:<11} {k['state']:<18} kcv {k['kcv']}  age {k['age_days']}d  "
            f"objects {k['objects']}"
        )
    total = sum(st["objects"].values())
    detail = ", ".join(f"{n} {kind}" for kind, n in sorted(st["objects"].items())) or "none"
    print(f"objects     {total} wrapped ({detail})")
    return _status_exit(st)
