"""The ``[access]`` table of ``custody.toml``: approvers for high-class grants, the longest
grant, the MFA mode. Missing keys take the defaults."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from custody.errors import ConfigError

DEFAULT_MAX_GRANT_SECONDS = 7 * 86400


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessSettings:
    high_approvers: int = 2
    max_grant_seconds: int = DEFAULT_MAX_GRANT_SECONDS
    mfa_mode: str = "enrolled"

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any]) -> AccessSettings:
        """Raises ConfigError on an out-of-range value."""
        base = cls()
        n = doc.get("high_approvers", base.high_approvers)
        m = doc.get("max_grant_seconds", base.max_grant_seconds)
        mode = doc.get("mfa_mode", base.mfa_mode)
        if type(n) is not int or not 1 <= n <= 16:
            raise ConfigError("[access] high_approvers must be 1..16", "See docs/access.md.")
        if type(m) is not int or not 60 <= m <= 90 * 86400:
            raise ConfigError(
                "[access] max_grant_seconds must be 60..7776000", "See docs/access.md."
            )
        if mode not in ("enrolled", "always"):
            raise ConfigError("[access] mfa_mode must be enrolled or always", "docs/access.md")
        return cls(high_approvers=n, max_grant_seconds=m, mfa_mode=mode)

    @classmethod
    def for_home(cls, config_file: Path) -> AccessSettings:
        try:
            doc = tomllib.loads(Path(config_file).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError):
            return cls()
        sec = doc.get("access", {})
        return cls.from_mapping(sec if isinstance(sec, dict) else {})


__all__ = ["AccessSettings"]
