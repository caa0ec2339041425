"""The custody home: where a deployment lives, and its TOML config.

A home is a directory holding ``custody.toml`` (this module), ``custody.db`` (the SQLite
store, :mod:`custody.store.sqlite`), and for the embedded default a SoftHSMv2 token directory
with its own ``softhsm2.conf`` (:mod:`custody.hsm.softhsm`). The home is chosen by
``--home``, else ``CUSTODY_HOME``, else ``./.custody-home``.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from custody.errors import ConfigError
from custody.privatefile import PUBLIC, write_private

CONFIG_NAME = "custody.toml"
DB_NAME = "custody.db"
DEFAULT_HOME = ".custody-home"
DEFAULT_SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"

ROTATION_DAYS = {"high": 90, "medium": 180, "low": 365}
DEFAULT_BRANCH_CLASS = {"data": "medium", "backup": "low", "secrets": "high"}


def resolve_home(home: str | os.PathLike[str] | None) -> Path:
    """Return the home directory: the argument, else ``CUSTODY_HOME``, else the default."""
    if home:
        return Path(home).expanduser().resolve()
    env = os.environ.get("CUSTODY_HOME")
    if env:
        return Path(env).expanduser().resolve()
    return Path(DEFAULT_HOME).resolve()


@dataclass(frozen=True, slots=True, kw_only=True)
class HsmConfig:
    """How to reach the PKCS#11 token.

    ``softhsm_conf`` is set only for the embedded default: a path (relative to the home)
    of the SoftHSMv2 config that custody provisioned. A real HSM leaves it ``None``.
    """

    module: str = DEFAULT_SOFTHSM_MODULE
    token_label: str = "custody"  # noqa: S105 (a token label, not a password)
    slot: int | None = None
    softhsm_conf: str | None = None
    kek_seal: str | None = None
    """How KEKs are sealed under the root on this token (``aes-gcm`` or ``aes-cbc-hmac``),
    recorded at init from the known-answer test; ``None`` (a home from before the record)
    means ``aes-gcm``. The token adapter refuses a record that differs from what the token
    does (docs/keys.md, "Sealing KEKs under the root")."""

    @property
    def embedded(self) -> bool:
        return self.softhsm_conf is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class BranchPolicy:
    """Rotation class and warning lead time of one KEK branch."""

    key_class: str
    warn_days: int = 14

    def __post_init__(self) -> None:
        if self.key_class not in ROTATION_DAYS:
            raise ValueError(f"unknown key class {self.key_class!r}")
        if self.warn_days < 0:
            raise ValueError("warn_days must be >= 0")

    @property
    def period_days(self) -> int:
        return ROTATION_DAYS[self.key_class]


def _default_branches() -> dict[str, BranchPolicy]:
    return {b: BranchPolicy(key_class=c) for b, c in DEFAULT_BRANCH_CLASS.items()}


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """A deployment's configuration, as stored in ``custody.toml``."""

    deployment_id: str
    created: str
    hsm: HsmConfig
    branches: dict[str, BranchPolicy] = field(default_factory=_default_branches)
    destroy_delay_days: int = 7
    ceremony_expiry_minutes: int = 240
    approval_window_seconds: int = 600
    drill_period_days: int = 180
    alert_hook: str | None = None
    store: str | None = None
    """``None``: the embedded SQLite file ``HOME/custody.db``; else a password-less
    ``postgresql://USER@HOST[:PORT]/DB[?sslmode=...]`` URL (docs/store.md)."""
    store_password_file: str | None = None
    """A 0600 file holding the PostgreSQL store's password (relative to the home)."""

    def to_toml(self) -> dict[str, Any]:
        hsm: dict[str, Any] = {"module": self.hsm.module, "token_label": self.hsm.token_label}
        if self.hsm.slot is not None:
            hsm["slot"] = self.hsm.slot
        if self.hsm.softhsm_conf is not None:
            hsm["softhsm_conf"] = self.hsm.softhsm_conf
        if self.hsm.kek_seal is not None:
            hsm["kek_seal"] = self.hsm.kek_seal
        doc: dict[str, Any] = {}
        if self.store is not None:
            doc["store"] = self.store
        if self.store_password_file is not None:
            doc["store_password_file"] = self.store_password_file
        doc |= {
            "deployment": {"id": self.deployment_id, "created": self.created},
            "hsm": hsm,
            "policy": {
                "destroy_delay_days": self.destroy_delay_days,
                "ceremony_expiry_minutes": self.ceremony_expiry_minutes,
                "approval_window_seconds": self.approval_window_seconds,
                "drill_period_days": self.drill_period_days,
                "branches": {
                    name: {"class": bp.key_class, "warn_days": bp.warn_days}
                    for name, bp in self.branches.items()
                },
            },
        }
        if self.alert_hook:
            doc["policy"]["alert_hook"] = self.alert_hook
        return doc

    @classmethod
    def from_toml(cls, doc: dict[str, Any]) -> Config:
        try:
            dep = doc["deployment"]
            hsm = doc.get("hsm", {})
            pol = doc.get("policy", {})
            branches = _default_branches()
            for name, b in pol.get("branches", {}).items():
                branches[name] = BranchPolicy(
                    key_class=str(b.get("class", "medium")), warn_days=int(b.get("warn_days", 14))
                )
            return cls(
                deployment_id=str(dep["id"]),
                created=str(dep["created"]),
                hsm=HsmConfig(
                    module=str(hsm.get("module", DEFAULT_SOFTHSM_MODULE)),
                    token_label=str(hsm.get("token_label", "custody")),
                    slot=int(hsm["slot"]) if "slot" in hsm else None,
                    softhsm_conf=hsm.get("softhsm_conf"),
                    kek_seal=None if hsm.get("kek_seal") is None else str(hsm["kek_seal"]),
                ),
                branches=branches,
                destroy_delay_days=int(pol.get("destroy_delay_days", 7)),
                ceremony_expiry_minutes=int(pol.get("ceremony_expiry_minutes", 240)),
                approval_window_seconds=int(pol.get("approval_window_seconds", 600)),
                drill_period_days=int(pol.get("drill_period_days", 180)),
                alert_hook=pol.get("alert_hook"),
                store=None if doc.get("store") is None else str(doc["store"]),
                store_password_file=(
                    None
                    if doc.get("store_password_file") is None
                    else str(doc["store_password_file"])
                ),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                "The config file is invalid",
                f"Fix {CONFIG_NAME}: {type(exc).__name__} in field {exc}.",
            ) from exc


@dataclass(frozen=True, slots=True)
class Home:
    """Paths inside one custody home."""

    root: Path

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_NAME

    @property
    def db_path(self) -> Path:
        return self.root / DB_NAME

    def store_location(self, config: Config) -> Path | str:
        """Where *config*'s store lives: ``HOME/custody.db``, or its PostgreSQL URL."""
        return config.store if config.store is not None else self.db_path

    def store_password_file(self, config: Config) -> Path | None:
        f = config.store_password_file
        return None if f is None else self.resolve(f)

    @property
    def transcripts_dir(self) -> Path:
        return self.root / "transcripts"

    @property
    def tokens_dir(self) -> Path:
        return self.root / "tokens"

    def exists(self) -> bool:
        return self.config_path.exists()

    def rel(self, path: str | os.PathLike[str]) -> str:
        """*path* as it is stored (in the store or a transcript): relative to the home when
        it lies inside the home, so that a copied home refers to its own files; absolute
        when it is outside (an ``--out`` on removable media belongs to no home)."""
        p = Path(path)
        if not p.is_absolute():
            return p.as_posix()
        try:
            return p.resolve().relative_to(self.root.resolve()).as_posix() or "."
        except ValueError:
            return str(p)

    def resolve(self, stored: str) -> Path:
        """A stored path (see :meth:`rel`) as a path on disk: relative ones are inside the
        home."""
        p = Path(stored)
        return p if p.is_absolute() else self.root / p

    def load(self) -> Config:
        """Load the config.

        Raises:
            ConfigError: there is no deployment here, or its config is unreadable.
        """
        if not self.config_path.exists():
            raise ConfigError(
                f"No custody deployment at {self.root}",
                "Run 'custody init' first, or point --home / CUSTODY_HOME at a deployment.",
            )
        try:
            doc = tomllib.loads(self.config_path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(
                f"Cannot read {self.config_path}", f"The file is not valid TOML: {exc}."
            ) from exc
        return Config.from_toml(doc)

    def write_config(self, config: Config) -> None:
        """Write the config atomically (:func:`custody.privatefile.write_private`: a fresh
        temporary name, fsync, rename; never through a link).

        Raises:
            StorageError: the file cannot be written, or ``custody.toml`` is a link.
        """
        import tomli_w

        data = tomli_w.dumps(config.to_toml()).encode()
        write_private(self.config_path, data, mode=PUBLIC)
