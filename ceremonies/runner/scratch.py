"""The drill's scratch token, built in a child process.

SoftHSMv2 reads its token directory once, at C_Initialize, and python-pkcs11 keeps one
initialised library per process. While the deployment's own token session is open (a drill
run with the PIN holds shares on it), a token created afterwards is invisible to this
process. So the scratch work runs in a fresh interpreter: it provisions the throw-away token,
unwraps the root blob straight into it and prints the KCV. Its inputs (the wrapping key and
the blob) arrive on stdin as JSON, never in argv; the scratch PINs are random and never leave
the child. The child gets an allow-listed environment (no ``CUSTODY_PIN`` or passphrase
variables) and turns off core dumps first. ``python -m ceremonies.runner.scratch`` is the
entry point.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from custody.errors import CustodyError, HsmError
from custody.hardening import child_env, harden_process


def build_scratch(
    *,
    home: Path,
    module: str,
    softhsm_conf: str,
    label: str,
    root_version: int,
    wrapping_key: bytes,
    blob: bytes,
    timeout: float = 120.0,
) -> str:
    """Provision scratch token *label*, unwrap the root into it, return the root's KCV.

    Raises:
        HsmError: the child could not provision the token or unwrap the blob.
        IntegrityError: the blob does not open under the wrapping key.
    """
    request = {
        "home": str(home),
        "module": module,
        "softhsm_conf": softhsm_conf,
        "label": label,
        "root_version": root_version,
        "key": wrapping_key.hex(),
        "blob": blob.hex(),
    }
    env = child_env(python=True)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")]
    )
    proc = subprocess.run(
        [sys.executable, "-m", "ceremonies.runner.scratch"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    try:
        answer: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise HsmError(
            "The scratch token could not be built", f"The child process exited {proc.returncode}."
        ) from exc
    if not answer.get("ok"):
        from custody import errors

        cls = getattr(errors, str(answer.get("error")), HsmError)
        if not (isinstance(cls, type) and issubclass(cls, CustodyError)):
            cls = HsmError
        raise cls(
            str(answer.get("title", "The scratch token could not be built")),
            str(answer.get("hint", "")),
        )
    return str(answer["kcv"])


def _child(request: dict[str, Any]) -> dict[str, Any]:
    from custody.config import HsmConfig
    from custody.hsm import softhsm
    from custody.hsm.pkcs11.adapter import open_hsm
    from custody.keys.hierarchy import ROOT_LABEL

    home = Path(request["home"])
    conf = home / request["softhsm_conf"]
    pin = os.urandom(12).hex()
    softhsm.init_token(conf, request["label"], os.urandom(12).hex(), pin)
    cfg = HsmConfig(
        module=request["module"], token_label=request["label"], softhsm_conf=request["softhsm_conf"]
    )
    with open_hsm(cfg, home, pin) as scratch:
        ref = scratch.import_wrapped(
            ROOT_LABEL,
            int(request["root_version"]),
            bytes.fromhex(request["key"]),
            bytes.fromhex(request["blob"]),
        )
    return {"ok": True, "kcv": ref.kcv}


def main() -> int:
    harden_process()  # the child holds the wrapping key and the root blob: no core dumps
    try:
        answer = _child(json.loads(sys.stdin.read()))
    except CustodyError as err:
        answer = {"ok": False, "error": type(err).__name__, "title": err.title, "hint": err.hint}
    print(json.dumps(answer))
    return 0 if answer.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
