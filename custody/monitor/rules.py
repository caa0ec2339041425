"""Monitoring rules as data: their kinds, thresholds and windows, and the op vocabulary.

The rules live in the ``[monitor]`` table of the home's ``custody.toml``; anything not given
takes the defaults below (:data:`DEFAULT_RULES`), so an empty table runs every kind once.
A table ``[monitor.rules.NAME]`` overrides the parameters of the default rule ``NAME``, or,
with a ``kind``, adds another rule of that kind (e.g. a tighter ``failed-burst`` for one
service account). ``enabled = false`` turns a rule off; ``exempt`` lists principals it
ignores. ``[monitor.ops]`` says which audit ops are reads, lists, writes, deletes,
restores and destroys, so that new front ends (the access layer, the server) are covered
by adding their op names here rather than by code.

Everything here is pure: :func:`parse_config` takes the table and returns a frozen
:class:`MonitorConfig` or raises :class:`~custody.errors.ConfigError`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from custody.canonical import canonical_bytes, domain_hash
from custody.errors import ConfigError

KINDS = (
    "failed-burst",
    "volume",
    "off-hours",
    "enumeration",
    "first-high",
    "old-version",
    "revoked-credential",
    "soft-delete-read",
)

# Parameters per kind, with their defaults (the types are checked against these).
KIND_PARAMS: Mapping[str, Mapping[str, Any]] = {
    # >= threshold denied/failed entries by one principal within window seconds.
    "failed-burst": {"window": 300, "threshold": 5, "weight": 2.5},
    # Today's successful reads above max(min_reads, ratio * median, median + z * 1.4826 *
    # MAD) of the principal's last history_days active days (needs min_days of them).
    "volume": {
        "min_days": 7,
        "history_days": 28,
        "ratio": 3.0,
        "z": 6.0,
        "min_reads": 20,
        "weight": 3.5,
    },
    # An access in an hour of the week (UTC) whose share of the principal's history,
    # with its neighbours on each side, is below min_fraction; after min_events entries
    # spread over min_days days.
    "off-hours": {
        "min_events": 60,
        "min_days": 14,
        "min_fraction": 0.004,
        "neighbours": 3,
        "cooldown": 3600,
        "weight": 1.5,
    },
    # new_paths never-before-read paths, or list_ops list ops, within window seconds.
    "enumeration": {"window": 3600, "new_paths": 8, "list_ops": 4, "weight": 3.0},
    # The first successful read of a secret of one of classes by a principal (one alert per
    # principal per cooldown seconds: an enumeration through high secrets is one alert).
    "first-high": {"classes": ["high"], "cooldown": 3600, "weight": 2.0},
    # A read of a version by label (labels), by state (states), or by a number below the
    # newest the monitor knows for that secret.
    "old-version": {
        "labels": ["previous"],
        "states": ["previous", "deprecated", "revoked", "retired"],
        "weight": 4.0,
    },
    # A denied or failed entry whose reason mentions one of reasons.
    "revoked-credential": {
        "reasons": ["revoked", "expired", "lapsed"],
        "cooldown": 600,
        "weight": 5.0,
    },
    # Any read of a secret between its soft delete and its restore or destruction (one
    # alert per principal and secret per cooldown seconds).
    "soft-delete-read": {"cooldown": 3600, "weight": 6.0},
}
COMMON_PARAMS: Mapping[str, Any] = {"enabled": True, "exempt": []}

DEFAULT_OPS: Mapping[str, tuple[str, ...]] = {
    "read": ("secret get", "secret.get", "secret.read", "access.read"),
    # lists, and bulk reads whose entries do not name each path (an export to a file)
    "list": ("secret list", "secret.list", "access.list", "secret export"),
    "write": (
        "secret put",
        "secret generate",
        "secret rotate",
        "secret import",
        "secret.put",
        "secret.rotate",
    ),
    "delete": ("secret delete", "secret.delete"),
    "restore": ("secret restore", "secret.restore"),
    "destroy": ("secret destroy", "secret.destroy"),
    # Alerts other parts of custody already record (the vault's 'secret alert').
    "notice": ("secret alert",),
}
# Ops the monitor itself writes: never traffic.
INTERNAL_OPS = frozenset({"alert.raised", "alert.ack", "monitor.scan"})
READ_DURING_WINDOW = "read-during-recovery-window"


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleSpec:
    """One rule: a name, its kind, and its parameters (defaults filled in)."""

    name: str
    kind: str
    params: Mapping[str, Any]
    enabled: bool = True
    exempt: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown rule kind {self.kind!r}")

    def __getitem__(self, key: str) -> Any:
        return self.params[key]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "enabled": self.enabled,
            "exempt": list(self.exempt),
            **{k: (list(v) if isinstance(v, tuple) else v) for k, v in self.params.items()},
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class MonitorConfig:
    """Rules, the op vocabulary, and where alerts go besides the audit log and the hook."""

    rules: tuple[RuleSpec, ...] = field(default_factory=lambda: default_rules())
    ops: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_OPS))
    learn_days: int = 7
    alert_file: str | None = None
    max_seqs: int = 200
    unfinished_after: int = 600  # seconds before an intent without an outcome counts as done

    def op_kinds(self) -> dict[str, str]:
        """op name -> its kind (read, list, write, delete, restore, destroy, notice)."""
        return {op: kind for kind, ops in self.ops.items() for op in ops}

    def deviations(self) -> dict[str, Any]:
        """Everything that differs from the defaults: per rule its changed parameters
        (``enabled``, ``exempt`` included), added rules whole, and the top-level settings;
        what a scan records when the rules change, so a weakened rule shows in the log."""
        base = {r.name: r.to_json() for r in default_rules()}
        out: dict[str, Any] = {}
        for r in self.rules:
            mine, ref = r.to_json(), base.get(r.name)
            if ref is None or ref["kind"] != mine["kind"]:
                out[f"rules.{r.name}"] = mine
                continue
            for k, v in mine.items():
                if ref.get(k) != v:
                    out[f"rules.{r.name}.{k}"] = v
        defaults = MonitorConfig().to_json()
        for k, v in self.to_json().items():
            if k not in ("rules", "alert_file") and defaults[k] != v:
                out[k] = v
        return out

    def digest(self) -> str:
        """A digest of what decides the alerts (rules, ops, learning; not where they go)."""
        doc = {k: v for k, v in self.to_json().items() if k != "alert_file"}
        return domain_hash("custody/monitor/config/v1", canonical_bytes(doc)).hex()

    def to_json(self) -> dict[str, Any]:
        return {
            "learn_days": self.learn_days,
            "alert_file": self.alert_file,
            "max_seqs": self.max_seqs,
            "unfinished_after": self.unfinished_after,
            "ops": {k: list(v) for k, v in self.ops.items()},
            "rules": [r.to_json() for r in self.rules],
        }


def default_rules() -> tuple[RuleSpec, ...]:
    return tuple(RuleSpec(name=k, kind=k, params=dict(KIND_PARAMS[k])) for k in KINDS)


def _checked(kind: str, name: str, key: str, value: Any) -> Any:
    """*value* for parameter *key* of a *kind* rule, of the default's type and sign."""
    default = {**COMMON_PARAMS, **KIND_PARAMS[kind]}.get(key)
    if default is None and key not in KIND_PARAMS[kind] and key not in COMMON_PARAMS:
        raise ValueError(f"rule {name}: unknown parameter {key!r} for kind {kind}")
    if isinstance(default, bool):
        if type(value) is not bool:
            raise ValueError(f"rule {name}: {key} must be true or false")
        return value
    if isinstance(default, list):
        if not isinstance(value, list) or not all(isinstance(x, str) and x for x in value):
            raise ValueError(f"rule {name}: {key} must be a list of strings")
        return tuple(value)
    if isinstance(default, int):
        if type(value) is not int or value < 0:
            raise ValueError(f"rule {name}: {key} must be a whole number >= 0")
        return value
    if type(value) not in (int, float) or value < 0:
        raise ValueError(f"rule {name}: {key} must be a number >= 0")
    return float(value)


def parse_config(doc: Mapping[str, Any]) -> MonitorConfig:
    """The config from a ``[monitor]`` table (missing keys: defaults).

    Raises:
        ConfigError: an unknown kind or parameter, a value of the wrong type, or a rule
            with no kind that names no default rule.
    """
    try:
        specs = {r.name: r for r in default_rules()}
        for name, raw in dict(doc.get("rules", {})).items():
            if not isinstance(raw, Mapping):
                raise ValueError(f"rule {name} must be a table")
            base = specs.get(name)
            kind = str(raw.get("kind", base.kind if base else ""))
            if kind not in KINDS:
                raise ValueError(f"rule {name}: kind must be one of {', '.join(KINDS)}")
            params = dict(base.params) if base and base.kind == kind else dict(KIND_PARAMS[kind])
            enabled, exempt = (base.enabled, base.exempt) if base else (True, ())
            for key, value in raw.items():
                if key == "kind":
                    continue
                v = _checked(kind, name, key, value)
                if key == "enabled":
                    enabled = v
                elif key == "exempt":
                    exempt = v
                else:
                    params[key] = v
            specs[name] = RuleSpec(
                name=name, kind=kind, params=params, enabled=enabled, exempt=exempt
            )
        ops = {k: tuple(v) for k, v in DEFAULT_OPS.items()}
        for kind, names in dict(doc.get("ops", {})).items():
            if kind not in DEFAULT_OPS:
                raise ValueError(f"ops: unknown kind {kind!r}")
            if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
                raise ValueError(f"ops.{kind} must be a list of op names")
            ops[kind] = tuple(names)
        learn = doc.get("learn_days", 7)
        if type(learn) is not int or not 0 <= learn <= 365:
            raise ValueError("learn_days must be 0..365")
        max_seqs = doc.get("max_seqs", 200)
        if type(max_seqs) is not int or not 1 <= max_seqs <= 10000:
            raise ValueError("max_seqs must be 1..10000")
        unfinished = doc.get("unfinished_after", 600)
        if type(unfinished) is not int or not 1 <= unfinished <= 86400:
            raise ValueError("unfinished_after must be 1..86400 seconds")
        alert_file = doc.get("alert_file")
        if alert_file is not None and (not isinstance(alert_file, str) or not alert_file):
            raise ValueError("alert_file must be a path")
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"The [monitor] table of custody.toml is invalid ({exc})",
            "See docs/monitoring.md for the rule kinds, their parameters and defaults.",
        ) from exc
    return MonitorConfig(
        rules=tuple(specs.values()),
        ops=ops,
        learn_days=learn,
        alert_file=alert_file,
        max_seqs=max_seqs,
        unfinished_after=unfinished,
    )


def load_config(config_file: Path) -> MonitorConfig:
    """The config in *config_file*'s ``[monitor]`` table (defaults when there is none).

    Raises:
        ConfigError: the file is not valid TOML, or the table is invalid.
    """
    try:
        doc = tomllib.loads(config_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return MonitorConfig()
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(
            f"Cannot read {config_file.name}", f"Fix the file ({type(exc).__name__})."
        ) from exc
    mon = doc.get("monitor", {})
    return parse_config(mon if isinstance(mon, Mapping) else {})
