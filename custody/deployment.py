"""The one door to a deployment: a home's config, store and token, opened together.

:func:`open_deployment` is how every front end (CLI, TUI) and every library caller opens a
home: it loads the config, opens the store and, given a PIN source, logs in to the home's
token. It opens them in that order (so a missing home is reported before any PIN is asked
for) and closes whatever it opened when a later part fails, so a bad PIN, a missing token
or a missing home is a typed error with nothing left open. :meth:`Deployment.login` logs an
already opened deployment in to its token (for callers that decide only after reading the
store, e.g. a ceremony's kind, or that report a token failure instead of raising).
:func:`open_token` logs in to a home's token alone (commands that need no
store), and :func:`open_audit_log` opens an existing home's audit log. A participant's own
token (a token-held signing key) is a different, named door in :mod:`ceremonies.participants`.

:func:`init_deployment` creates a home (config, store, and for the embedded default a
SoftHSMv2 token it provisions itself). It refuses an existing home and leaves nothing
half-written when it fails: the config file is written last, atomically, and anything it
created before a failure is removed.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from custody.audit.log import AuditLog, audit_location
from custody.clock import iso, utcnow
from custody.config import Config, Home, HsmConfig
from custody.errors import AuditError, ConfigError, CustodyError, UsageError
from custody.hsm import Hsm, softhsm
from custody.keys.hierarchy import KeyHierarchy
from custody.store import Store, open_store

EMBEDDED_TOKEN_LABEL = "custody"  # noqa: S105 (a token label, not a password)

PinSource = str | Callable[[], str]
"""A token user PIN, or a function that asks for it (called once, only when the home and
its store have opened). The PIN is used for C_Login and never kept."""


def _login(home: Home, hsm: HsmConfig, pin: PinSource) -> Hsm:
    """Log in to the token *hsm* names (the PKCS#11 adapter is imported only here, lazily,
    so commands that never touch the token do not load it)."""
    from custody.hsm.pkcs11.adapter import open_hsm

    if hsm.softhsm_conf == softhsm.CONF_NAME:
        softhsm.ensure_conf(home.root)  # a copied home uses its own tokens, never the original's
    return open_hsm(hsm, home.root, pin() if callable(pin) else pin)


@dataclass
class Deployment:
    """An opened home: its config and store, and its token once logged in (:attr:`hsm`).

    Open one with :func:`open_deployment`; close it (or use it as a context manager).
    """

    home: Home
    config: Config
    store: Store
    hsm: Hsm | None = field(default=None, repr=False)

    def login(self, pin: PinSource) -> Hsm:
        """Log in to the home's token and keep the session on this deployment.

        On failure nothing is kept (the store stays open: the caller still owns it).

        Raises:
            ConfigError: the PIN source has no PIN. TokenNotPresent: no such token.
            PinIncorrect, PinLocked, HsmError: the token refused or failed.
        """
        if self.hsm is None:
            self.hsm = _login(self.home, self.config.hsm, pin)
        return self.hsm

    @property
    def token(self) -> Hsm:
        """The logged-in token.

        Raises:
            UsageError: the deployment was opened without a PIN.
        """
        if self.hsm is None:
            raise UsageError(
                "The token is not open", "Give the token PIN (--pin-file or CUSTODY_PIN)."
            )
        return self.hsm

    @property
    def hierarchy(self) -> KeyHierarchy:
        return KeyHierarchy(self.store, self.hsm)

    def close(self) -> None:
        hsm, self.hsm = self.hsm, None
        try:
            if hsm is not None:
                hsm.close()
        finally:
            self.store.close()

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_home_store(home: Home, config: Config | None = None, *, create: bool = False) -> Store:
    """Open the store *config* names for *home* (the embedded SQLite file, or the
    PostgreSQL URL of ``store =`` with its password source).

    Raises:
        ConfigError: no deployment at *home*, or a bad store URL or password file.
        StorageError: the store is missing, unreachable or unreadable.
    """
    config = home.load() if config is None else config
    return open_store(
        home.store_location(config),
        create=create,
        local=home.db_path,
        password_file=home.store_password_file(config),
    )


def open_deployment(home: Home | Path, pin: PinSource | None = None) -> Deployment:
    """Open *home*: its config, its store and, when *pin* is given, its token.

    The PIN source is consulted only after the config and the store have opened. When any
    part fails, what was opened before it is closed again: the caller gets a typed error
    and nothing stays open.

    Raises:
        ConfigError: no deployment at *home*, an unreadable config, or no PIN from *pin*.
        StorageError: the store is missing or unreadable.
        TokenNotPresent, PinIncorrect, PinLocked, HsmError: the token part failed.
    """
    home = home if isinstance(home, Home) else Home(Path(home))
    config = home.load()
    dep = Deployment(home=home, config=config, store=open_home_store(home, config))
    if pin is not None:
        try:
            dep.login(pin)
        except BaseException:
            dep.close()
            raise
    return dep


def open_token(home: Home | Path, pin: PinSource) -> Hsm:
    """Log in to *home*'s token alone, without its store (``custody hsm selftest``, sealing
    a share to the token, an audit checkpoint signed on the token, the TUI's PIN check).

    The same door as :func:`open_deployment` without the store: the config is loaded first,
    so a missing home is reported before any PIN is asked for. Close the token when done.

    Raises:
        ConfigError: no deployment at *home*, or no PIN from *pin*.
        TokenNotPresent, PinIncorrect, PinLocked, HsmError: the token refused or failed.
    """
    home = home if isinstance(home, Home) else Home(Path(home))
    return _login(home, home.load().hsm, pin)


AUDIT_LOG_HINT = "Point --home at a custody deployment."


def open_audit_log(
    home: Home | Path, *, hint: str = AUDIT_LOG_HINT, timeout: float = 60.0
) -> AuditLog:
    """Open the audit log of an existing home (never creates one).

    Args:
        home: the custody home.
        hint: the error's hint when there is no log (front ends word it for their users).
        timeout: how long to wait for a busy log (seconds).

    Raises:
        AuditError: the home has no audit log.
    """
    root = home.root if isinstance(home, Home) else Path(home)
    loc, pwfile = audit_location(root)
    if isinstance(loc, Path) and not loc.exists():
        raise AuditError(f"No audit log at {loc}", hint)
    return AuditLog(loc, timeout=timeout, password_file=pwfile)


def refuse_existing(home: Home) -> None:
    """Raise before anything is asked or written when *home* already holds a deployment.

    Raises:
        ConfigError: a config or a store is already there.
    """
    if home.exists() or home.db_path.exists():
        raise ConfigError(
            f"{home.root} already holds a custody deployment",
            "Nothing was changed. Use another --home, or remove this one deliberately.",
        )


def init_deployment(
    home: Home,
    *,
    user_pin: str,
    so_pin: str | None,
    hsm: HsmConfig | None = None,
    dev_root: bool = False,
    store: str | None = None,
    store_password_file: str | None = None,
) -> Config:
    """Create a new deployment in *home*.

    Args:
        home: the home to create (the directory may exist, but must hold no deployment).
        user_pin: the token user PIN (set on a new embedded token; used to log in).
        so_pin: the token SO PIN (embedded default only).
        hsm: a real HSM to use instead of provisioning the embedded SoftHSMv2 token.
        dev_root: also generate a root key with no recovery shares (development only).
        store: a PostgreSQL URL (no password) instead of the embedded SQLite file; its
            database must exist and hold no custody store yet.
        store_password_file: a 0600 file with that store's password.

    Returns:
        The new config.

    Raises:
        ConfigError: the home already holds a deployment, or inputs are missing.
        HsmError: the token could not be provisioned or reached.
        StorageError: the store could not be created.
    """
    root = home.root
    refuse_existing(home)
    created_dir = not root.exists()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    created: list[Path] = []
    try:
        if hsm is None:
            if not so_pin:
                raise ConfigError(
                    "The embedded token needs an SO PIN",
                    "Set CUSTODY_SO_PIN or use --pin-file with so_pin=.",
                )
            if (root / "tokens").exists():
                raise ConfigError(
                    f"{root}/tokens already exists", "Remove it or choose another home."
                )
            created += [root / "tokens", root / softhsm.CONF_NAME]
            conf = softhsm.write_conf(root)
            softhsm.init_token(conf, EMBEDDED_TOKEN_LABEL, so_pin, user_pin)
            hsm = HsmConfig(token_label=EMBEDDED_TOKEN_LABEL, softhsm_conf=softhsm.CONF_NAME)
        config = Config(
            deployment_id=uuid.uuid4().hex,
            created=iso(utcnow()),
            hsm=hsm,
            store=store,
            store_password_file=store_password_file,
        )
        created += [
            home.db_path,
            Path(str(home.db_path) + "-wal"),
            Path(str(home.db_path) + "-shm"),
        ]
        store_ = open_home_store(home, config, create=True)
        if store is not None and store_.get_meta("deployment_id") is not None:
            store_.close()
            raise ConfigError(
                "That PostgreSQL store already holds a custody deployment",
                "Nothing was changed. Give an empty database, or point the config of an "
                "existing home at it.",
            )
        try:
            store_.set_meta("deployment_id", config.deployment_id)
            token = _login(home, config.hsm, user_pin)  # proves the PIN and token work
            try:
                choices = token.preflight()  # refuses an unsuitable token; all is removed
                # how this token seals KEKs, by its known-answer test: fixed for the home
                config = replace(config, hsm=replace(config.hsm, kek_seal=choices["kek_seal"]))
                if dev_root:
                    KeyHierarchy(store_, token).create_dev_root()
                    store_.set_meta("dev_root", "1")
            finally:
                token.close()
        finally:
            store_.close()
        home.transcripts_dir.mkdir(exist_ok=True)
        home.write_config(config)
        return config
    except (CustodyError, OSError, KeyboardInterrupt) as exc:
        for p in created:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            elif p.exists():
                p.unlink()
        if created_dir:
            shutil.rmtree(root, ignore_errors=True)
        if isinstance(exc, OSError):
            raise ConfigError(
                f"Cannot create {root}", f"{exc.strerror or exc}; nothing was kept."
            ) from exc
        raise
