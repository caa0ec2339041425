"""The policy's secret categories, their security classes and rotation periods.

Each category maps to a class: **high** (rotate every 90 days: encryption and signing keys,
database and VPN credentials, certificate keys, backup and transport keys), **medium** (180
days: API keys, tokens, service credentials, OAuth and JWT secrets) or **low** (365 days:
configuration, development and test secrets). The mapping and the periods are data: the
home's ``custody.toml`` may override them (``[secrets.classes]`` and
``[secrets.categories]``), and :class:`SecretPolicy` is what the vault reads.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from custody.errors import ConfigError, UsageError


class Category(StrEnum):
    EXTERNAL_API_KEY = "external-api-key"
    INTERNAL_API_KEY = "internal-api-key"
    SERVICE_TOKEN = "service-token"  # noqa: S105
    WEBHOOK_SECRET = "webhook-secret"  # noqa: S105
    DATABASE_CREDENTIAL = "database-credential"
    SERVICE_CREDENTIAL = "service-credential"
    VPN_CREDENTIAL = "vpn-credential"
    SYSTEM_CREDENTIAL = "system-credential"
    DATA_ENCRYPTION_KEY = "data-encryption-key"
    TRANSPORT_KEY = "transport-key"
    BACKUP_KEY = "backup-key"
    SIGNING_KEY = "signing-key"
    OAUTH_CLIENT_SECRET = "oauth-client-secret"  # noqa: S105
    JWT_SECRET = "jwt-secret"  # noqa: S105
    SESSION_SECRET = "session-secret"  # noqa: S105
    CERTIFICATE_PRIVATE_KEY = "certificate-private-key"
    CONFIGURATION_SECRET = "configuration-secret"  # noqa: S105
    DEVELOPMENT_CREDENTIAL = "development-credential"
    TEST_API_KEY = "test-api-key"


class SecurityClass(StrEnum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


DEFAULT_CLASS_DAYS: Mapping[SecurityClass, int] = {
    SecurityClass.HIGH: 90,
    SecurityClass.MEDIUM: 180,
    SecurityClass.LOW: 365,
}

_H, _M, _L = SecurityClass.HIGH, SecurityClass.MEDIUM, SecurityClass.LOW
DEFAULT_CATEGORY_CLASS: Mapping[Category, SecurityClass] = {
    Category.EXTERNAL_API_KEY: _M,
    Category.INTERNAL_API_KEY: _M,
    Category.SERVICE_TOKEN: _M,
    Category.WEBHOOK_SECRET: _M,
    Category.DATABASE_CREDENTIAL: _H,
    Category.SERVICE_CREDENTIAL: _M,
    Category.VPN_CREDENTIAL: _H,
    Category.SYSTEM_CREDENTIAL: _H,
    Category.DATA_ENCRYPTION_KEY: _H,
    Category.TRANSPORT_KEY: _H,
    Category.BACKUP_KEY: _H,
    Category.SIGNING_KEY: _H,
    Category.OAUTH_CLIENT_SECRET: _M,
    Category.JWT_SECRET: _M,
    Category.SESSION_SECRET: _M,
    Category.CERTIFICATE_PRIVATE_KEY: _H,
    Category.CONFIGURATION_SECRET: _L,
    Category.DEVELOPMENT_CREDENTIAL: _L,
    Category.TEST_API_KEY: _L,
}

ENVIRONMENTS_DEFAULT = ("dev", "staging", "prod")
_SEG = set("abcdefghijklmnopqrstuvwxyz0123456789-_.")


def parse_category(text: str) -> Category:
    """The category named *text*.

    Raises:
        UsageError: not one of the policy's categories (the hint lists them).
    """
    try:
        return Category(text)
    except ValueError:
        raise UsageError(
            f"Unknown secret category {text[:40]!r}",
            "Use one of: " + ", ".join(c.value for c in Category) + ".",
        ) from None


def check_path(path: str) -> str:
    """A secret path: 1 to 8 segments of ``a-z 0-9 - _ .``, joined by ``/``
    (``payments/stripe/api-key``); no empty, ``.`` or ``..`` segment.

    Raises:
        UsageError: the path breaks the rule.
    """
    segs = path.split("/")
    ok = (
        0 < len(path) <= 200
        and 1 <= len(segs) <= 8
        and all(s and s not in (".", "..") and set(s) <= _SEG for s in segs)
    )
    if not ok:
        raise UsageError(
            f"Not a secret path: {path[:60]!r}",
            "Use lowercase segments of a-z, 0-9, '-', '_' or '.', joined by '/', "
            "e.g. payments/stripe/api-key.",
        )
    return path


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretPolicy:
    """Classes, periods, environments and windows the vault applies (from the config)."""

    class_days: Mapping[SecurityClass, int] = field(
        default_factory=lambda: dict(DEFAULT_CLASS_DAYS)
    )
    category_class: Mapping[Category, SecurityClass] = field(
        default_factory=lambda: dict(DEFAULT_CATEGORY_CLASS)
    )
    environments: tuple[str, ...] = ENVIRONMENTS_DEFAULT
    recovery_window_days: int = 7
    destroy_delay_days: int = 1
    warn_days: tuple[int, ...] = (30, 14, 7, 1, 0)
    max_rotation_failures: int = 3

    def class_of(self, category: Category) -> SecurityClass:
        return self.category_class[category]

    def period_days(self, category: Category) -> int:
        return self.class_days[self.class_of(category)]

    def check_env(self, env: str) -> str:
        """Raises UsageError when *env* is not one of the configured environments."""
        if env not in self.environments:
            raise UsageError(
                f"Unknown environment {env[:40]!r}",
                f"Use one of: {', '.join(self.environments)} (custody.toml [secrets]).",
            )
        return env

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any]) -> SecretPolicy:
        """Build from the ``[secrets]`` table of ``custody.toml`` (missing keys: defaults).

        Raises:
            ConfigError: an unknown class or category, or a period that is not 1..3650 days.
        """
        base = cls()
        try:
            days = dict(base.class_days)
            for k, v in dict(doc.get("classes", {})).items():
                if type(v) is not int or not 1 <= v <= 3650:
                    raise ValueError(f"period of {k}")
                days[SecurityClass(k)] = v
            cats = dict(base.category_class)
            for k, v in dict(doc.get("categories", {})).items():
                cats[Category(k)] = SecurityClass(v)
            envs = tuple(doc.get("environments", base.environments))
            if not envs or not all(isinstance(e, str) and e and set(e) <= _SEG for e in envs):
                raise ValueError("environments")
            window = doc.get("recovery_window_days", base.recovery_window_days)
            delay = doc.get("destroy_delay_days", base.destroy_delay_days)
            if type(window) is not int or not 1 <= window <= 90:
                raise ValueError("recovery_window_days")
            if type(delay) is not int or not 0 <= delay <= 30:
                raise ValueError("destroy_delay_days")
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"The [secrets] table of custody.toml is invalid ({exc})",
                "See docs/secrets.md for its keys and allowed values.",
            ) from exc
        return cls(
            class_days=days,
            category_class=cats,
            environments=envs,
            recovery_window_days=window,
            destroy_delay_days=delay,
        )

    @classmethod
    def for_home(cls, config_file: Path) -> SecretPolicy:
        """The policy in *config_file*'s ``[secrets]`` table (defaults when absent)."""
        try:
            doc = tomllib.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError):
            return cls()
        sec = doc.get("secrets", {})
        return cls.from_mapping(sec if isinstance(sec, dict) else {})
