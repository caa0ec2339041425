"""A deployment: one home's config, store and HSM, opened together.

:func:`init_deployment` creates a home (config, store, and for the embedded default a
SoftHSMv2 token it provisions itself). It refuses an existing home and leaves nothing
half-written when it fails: the config file is written last, atomically, and anything it
created before a failure is removed.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from custody.clock import iso, utcnow
from custody.config import Config, Home, HsmConfig
from custody.errors import ConfigError, CustodyError
from custody.hsm import Hsm
from custody.keys.hierarchy import KeyHierarchy
from custody.store import Store, open_store

EMBEDDED_TOKEN_LABEL = "custody"  # noqa: S105 (a token label, not a password)


def open_hsm(home: Home, config: Config, pin: str) -> Hsm:
    """Open and log in to the deployment's token (imports the PKCS#11 adapter lazily)."""
    from custody.hsm.pkcs11.adapter import open_hsm as _open

    return _open(config.hsm, home.root, pin)


@dataclass
class Deployment:
    """An opened home. The HSM is opened only when a PIN is supplied."""

    home: Home
    config: Config
    store: Store
    hsm: Hsm | None = field(default=None, repr=False)

    @classmethod
    def open(cls, home: Home, pin: str | None = None) -> Deployment:
        """Open a home's config and store, and the HSM if *pin* is given.

        Raises:
            ConfigError, StorageError, HsmError.
        """
        config = home.load()
        store = open_store(home.db_path)
        hsm = open_hsm(home, config, pin) if pin is not None else None
        return cls(home=home, config=config, store=store, hsm=hsm)

    @property
    def hierarchy(self) -> KeyHierarchy:
        return KeyHierarchy(self.store, self.hsm)

    def close(self) -> None:
        if self.hsm is not None:
            self.hsm.close()
        self.store.close()

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
) -> Config:
    """Create a new deployment in *home*.

    Args:
        home: the home to create (the directory may exist, but must hold no deployment).
        user_pin: the token user PIN (set on a new embedded token; used to log in).
        so_pin: the token SO PIN (embedded default only).
        hsm: a real HSM to use instead of provisioning the embedded SoftHSMv2 token.
        dev_root: also generate a root key with no recovery shares (development only).

    Returns:
        The new config.

    Raises:
        ConfigError: the home already holds a deployment, or inputs are missing.
        HsmError: the token could not be provisioned or reached.
        StorageError: the store could not be created.
    """
    from custody.hsm import softhsm

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
        config = Config(deployment_id=uuid.uuid4().hex, created=iso(utcnow()), hsm=hsm)
        created += [
            home.db_path,
            Path(str(home.db_path) + "-wal"),
            Path(str(home.db_path) + "-shm"),
        ]
        store = open_store(home.db_path, create=True)
        try:
            store.set_meta("deployment_id", config.deployment_id)
            token = open_hsm(home, config, user_pin)  # proves the PIN and token work
            try:
                if dev_root:
                    KeyHierarchy(store, token).create_dev_root()
                    store.set_meta("dev_root", "1")
            finally:
                token.close()
        finally:
            store.close()
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
