"""Where PINs and passphrases come from: a file, the environment, or a prompt. Never argv.

One function, :func:`read_secret`, serves every command, so all of them take credentials
the same way. Values are returned as ``str`` and never logged or echoed.
"""

from __future__ import annotations

import getpass
import os
import stat
import sys
from pathlib import Path

from custody.errors import ConfigError


class InsecureSecretFile(ConfigError):
    """A PIN or passphrase file that other users can read (or that another user owns)."""


def _check_private(p: Path, st: os.stat_result) -> None:
    """Refuse a secret file that group or others may read or write, or another user owns.

    The check is made on the opened descriptor (``fstat``), so the file cannot be swapped
    between the check and the read. Not made on platforms without POSIX modes (Windows).
    """
    if os.name != "posix":
        return
    if st.st_mode & 0o077:
        raise InsecureSecretFile(
            f"Secret file {p} is readable by other users (mode {stat.S_IMODE(st.st_mode):04o})",
            f"Run 'chmod 600 {p}' and check who may have read it; nothing was done.",
        )
    if st.st_uid != os.geteuid():
        raise InsecureSecretFile(
            f"Secret file {p} belongs to another user (uid {st.st_uid})",
            f"Use a file you own with mode 0600 ('chmod 600 {p}' after copying it); "
            "nothing was done.",
        )


def read_secret_file(path: str | os.PathLike[str], *, key: str | None = None) -> str:
    """Read a secret from a file, stripping one trailing newline.

    The file must be private to the user: no permission bits for group or others, and owned
    by the user who runs custody (see :func:`_check_private`).

    A file may hold a single value, or ``name=value`` lines (for example ``pin=...`` and
    ``so_pin=...``) when *key* is given.

    Args:
        path: the file to read.
        key: the ``name`` to look up in a ``name=value`` file; ``None`` for a plain file.

    Returns:
        The secret.

    Raises:
        InsecureSecretFile: group or others may read or write the file (its mode is not
            0600 or 0400), or another user owns it; the hint says ``chmod 600 FILE``.
        ConfigError: the file cannot be read, is not UTF-8, or holds no value for *key*.
    """
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ConfigError(
            f"Cannot read secret file {p}", "Check the path and its permissions."
        ) from exc
    try:
        _check_private(p, os.fstat(fd))
        with os.fdopen(fd, "rb", closefd=False) as fh:
            raw = fh.read()
    except OSError as exc:
        raise ConfigError(
            f"Cannot read secret file {p}", "Check the path and its permissions."
        ) from exc
    finally:
        os.close(fd)
    try:
        text = raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"Secret file {p} is not UTF-8 text", "Write the value as plain UTF-8 text."
        ) from exc
    if text.endswith("\n"):
        text = text[:-1]
    if text.endswith("\r"):
        text = text[:-1]
    lines = text.split("\n")
    keyed = {}
    for line in lines:
        name, sep, value = line.partition("=")
        if sep and name.strip() in {"pin", "so_pin", "so-pin", "passphrase"}:
            keyed[name.strip().replace("-", "_")] = value
    if key is None:
        if keyed:
            if "pin" in keyed:
                return keyed["pin"]
            if "passphrase" in keyed:
                return keyed["passphrase"]
        return text
    if keyed:
        if key in keyed:
            return keyed[key]
        raise ConfigError(
            f"Secret file {p} has no '{key}=' line",
            f"Add a line '{key}=...' to the file, or use the environment variable.",
        )
    if key == "pin":
        return text
    raise ConfigError(
        f"Secret file {p} holds one value, but '{key}' is also needed",
        f"Write the file as 'pin=...' and '{key}=...' lines.",
    )


def read_secret(
    *,
    what: str,
    file: str | os.PathLike[str] | None = None,
    file_key: str | None = None,
    env: str | None = None,
    prompt: bool = True,
    confirm: bool = False,
) -> str:
    """Get a secret from a file, then the environment, then a terminal prompt.

    Args:
        what: human name of the secret, for prompts and errors ("token user PIN").
        file: a path given with ``--pin-file``/``--passphrase-file``.
        file_key: the ``name=`` key to look for in that file.
        env: the environment variable to consult.
        prompt: whether an interactive prompt is allowed.
        confirm: ask twice at the prompt and require the same answer.

    Returns:
        The secret (never empty).

    Raises:
        ConfigError: no source gave a value, or the prompt answers differ or are empty.
    """
    if file is not None:
        value = read_secret_file(file, key=file_key)
    elif env and os.environ.get(env):
        value = os.environ[env]
    elif prompt and sys.stdin is not None and sys.stdin.isatty():
        value = getpass.getpass(f"{what}: ")
        if confirm and getpass.getpass(f"{what} (again): ") != value:
            raise ConfigError(f"The two {what} entries differ", "Type the same value twice.")
    else:
        src = f"the {env} environment variable, " if env else ""
        raise ConfigError(
            f"No {what} was given",
            f"Provide it with a file option, {src}or run at a terminal to be prompted.",
        )
    if not value:
        raise ConfigError(f"The {what} is empty", "Provide a non-empty value.")
    return value
