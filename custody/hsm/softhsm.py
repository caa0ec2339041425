"""Provisioning of the embedded default: a SoftHSMv2 token under the custody home.

custody creates its own token directory and ``softhsm2.conf``, then initialises a token
with ``softhsm2-util``. The PINs are typed into ``softhsm2-util`` through a pseudo-terminal,
so they never appear in any process's argv (``softhsm2-util --pin`` would show them in
``ps``). ``softhsm2-util`` gets only the environment it needs
(:func:`custody.hardening.child_env` plus ``SOFTHSM2_CONF``). This module does not import
``pkcs11``.
"""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
from pathlib import Path

from custody.errors import ConfigError, HsmError
from custody.hardening import child_env

SOFTHSM_UTIL = "softhsm2-util"
CONF_NAME = "softhsm2.conf"


def write_conf(root: Path) -> Path:
    """Create ``root/tokens`` and ``root/softhsm2.conf``; return the conf path."""
    tokens = root / "tokens"
    tokens.mkdir(parents=True, exist_ok=True, mode=0o700)
    conf = root / CONF_NAME
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
        "slots.removable = false\n",
        encoding="utf-8",
    )
    return conf


def conf_matches(root: Path) -> bool:
    """Whether ``root/softhsm2.conf`` points at ``root/tokens`` (a copied or moved home's
    config still names the original's token directory)."""
    try:
        text = (root / CONF_NAME).read_text(encoding="utf-8")
    except OSError:
        return False
    for line in text.splitlines():
        name, _, value = line.partition("=")
        if name.strip() == "directories.tokendir":
            return Path(value.strip()).resolve() == (root / "tokens").resolve()
    return False


def ensure_conf(root: Path) -> Path:
    """The home's SoftHSMv2 config, rewritten when it names another home's token directory,
    so that a copy of a home uses its own tokens and never the original's."""
    if not conf_matches(root):
        return write_conf(root)
    (root / "tokens").mkdir(mode=0o700, exist_ok=True)  # a lost token directory
    return root / CONF_NAME


def token_labels(conf: Path) -> list[str]:
    """The labels of the initialised tokens under *conf* (``softhsm2-util --show-slots``;
    no PIN needed).

    Raises:
        ConfigError: ``softhsm2-util`` is not installed. HsmError: it failed.
    """
    if shutil.which(SOFTHSM_UTIL) is None:
        raise ConfigError(
            "softhsm2-util is not installed", "Install SoftHSMv2 ('apt-get install -y softhsm2')."
        )
    env = child_env(extra={"SOFTHSM2_CONF": str(conf)})
    res = subprocess.run(
        [SOFTHSM_UTIL, "--show-slots"], env=env, capture_output=True, text=True, check=False
    )
    if res.returncode != 0:
        raise HsmError("softhsm2-util could not list the slots", res.stderr.strip()[:200])
    labels, initialised = [], False
    for raw in res.stdout.splitlines():
        line = raw.strip()
        if line.startswith("Initialized:"):
            initialised = line.endswith("yes")
        elif line.startswith("Label:") and initialised:
            labels.append(line.split(":", 1)[1].strip())
    return labels


def _feed_pty(argv: list[str], env: dict[str, str], answers: list[bytes], timeout: float) -> str:
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
        )
    finally:
        os.close(slave)
    out = b""
    pending = list(answers)
    try:
        while True:
            ready, _, _ = select.select([master], [], [], timeout)
            if not ready:
                proc.kill()
                raise HsmError("softhsm2-util did not answer", "Check the SoftHSMv2 install.")
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
            if pending and out.rstrip().endswith(b":"):
                os.write(master, pending.pop(0))
                out += b"\n"
    finally:
        os.close(master)
        rc = proc.wait()
    text = out.decode(errors="replace")
    if rc != 0:
        # The transcript of the pty holds only prompts and '*' echoes, never PINs.
        last = [ln for ln in text.splitlines() if ln.strip()][-1:] or ["(no output)"]
        raise HsmError("SoftHSMv2 could not initialise the token", f"softhsm2-util said: {last[0]}")
    return text


def init_token(conf: Path, label: str, so_pin: str, user_pin: str, timeout: float = 30.0) -> None:
    """Initialise a free slot as token *label* with the given PINs.

    Raises:
        ConfigError: ``softhsm2-util`` is not installed, or a PIN is too short.
        HsmError: SoftHSMv2 refused.
    """
    if shutil.which(SOFTHSM_UTIL) is None:
        raise ConfigError(
            "softhsm2-util is not installed",
            "Install SoftHSMv2 ('apt-get install -y softhsm2'), or 'make run' does it for you.",
        )
    for name, pin in (("SO PIN", so_pin), ("user PIN", user_pin)):
        if not 4 <= len(pin) <= 255 or "\n" in pin:
            raise ConfigError(
                f"The {name} must be 4 to 255 characters on one line", "Choose another."
            )
    env = child_env(extra={"SOFTHSM2_CONF": str(conf)})
    answers = [p.encode() + b"\n" for p in (so_pin, so_pin, user_pin, user_pin)]
    _feed_pty([SOFTHSM_UTIL, "--init-token", "--free", "--label", label], env, answers, timeout)


def delete_token(conf: Path, label: str) -> None:
    """Delete token *label* (used for a drill's scratch token and the demo's 'lost HSM')."""
    env = child_env(extra={"SOFTHSM2_CONF": str(conf)})
    res = subprocess.run(
        [SOFTHSM_UTIL, "--delete-token", "--token", label],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        raise HsmError(
            f"Could not delete token {label!r}", res.stderr.strip() or "See softhsm2-util."
        )
