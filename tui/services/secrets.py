"""The secrets screen's services: the vault's metadata as view models, and its audited
operations (reveal, put, generate, rotate, delete, restore).

Everything goes through :mod:`custody.secrets.operator`, the same door as ``custody
secret``: the same vault (the home's policy, the token's RNG, alerts to the audit log and
the hook) and the same audit entries (``secret put``, ``secret get`` ... on ``ENV:PATH``,
with ``via: tui``). Each call opens its own deployment in the worker thread and closes it
before returning; the PIN and a key's passphrase are arguments, never attributes.

Values: listing and detail never decrypt anything. A value leaves this module only in a
:class:`RevealedValue`, after an audited ``secret get``, whose ``repr`` and ``str`` never
show it; the screen shows it masked until asked, and drops it on a timer and on leaving.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from custody.errors import UsageError

T = TypeVar("T")
MASK = "\u2022" * 12  # the same width whatever the value: the mask does not tell its length

# short category names for the 80-column table (the detail pane shows the full name)
SHORT_CATEGORY = {
    "external-api-key": "ext-api",
    "internal-api-key": "int-api",
    "service-token": "svc-token",
    "webhook-secret": "webhook",
    "database-credential": "db-cred",
    "service-credential": "svc-cred",
    "vpn-credential": "vpn-cred",
    "system-credential": "sys-cred",
    "data-encryption-key": "data-key",
    "transport-key": "transport",
    "backup-key": "backup",
    "signing-key": "signing",
    "oauth-client-secret": "oauth",
    "jwt-secret": "jwt",
    "session-secret": "session",
    "certificate-private-key": "cert-key",
    "configuration-secret": "config",
    "development-credential": "dev-cred",
    "test-api-key": "test-api",
}
WARN_DAYS = 30  # the first expiry warning point


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretItem:
    """One secret's metadata (a row of the table). No value, nothing decrypted."""

    env: str
    path: str
    category: str
    security_class: str
    owner: str
    version: int | None  # current
    state: str  # active | rotating | deprecated | destroyed
    expires: str
    days_left: int
    rotation_failures: int = 0
    destroy_after: str = ""

    @property
    def key(self) -> str:
        return f"{self.env}:{self.path}"

    @property
    def due(self) -> str:
        """What the due column says: overdue, a warning, or nothing."""
        if self.state not in ("active", "rotating"):
            return ""
        if self.days_left < 0:
            return f"overdue {-self.days_left} d"
        if self.days_left <= WARN_DAYS:
            return f"due in {self.days_left} d"
        return ""


@dataclass(frozen=True, slots=True, kw_only=True)
class VersionItem:
    version: int
    state: str  # live | revoked | discarded | destroyed
    source: str
    created: str
    labels: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretDetail:
    item: SecretItem
    labels: tuple[tuple[str, int], ...]  # ("current", 3), ...
    versions: tuple[VersionItem, ...]
    created: str = ""
    updated: str = ""
    deleted_at: str = ""
    previous_until: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretsView:
    environments: tuple[str, ...]
    items: tuple[SecretItem, ...]
    categories: tuple[str, ...]
    hidden: int = 0  # secrets access control keeps from this operator's list


class RevealedValue:
    """A revealed value on its way to the screen. ``repr``/``str`` never show it."""

    __slots__ = ("_value", "env", "path", "version")

    def __init__(self, env: str, path: str, version: int, value: str) -> None:
        self.env, self.path, self.version = env, path, version
        self._value: str | None = value

    def __repr__(self) -> str:
        return f"RevealedValue({self.env}:{self.path}#v{self.version}, <hidden>)"

    __str__ = __repr__

    @property
    def value(self) -> str:
        return self._value or ""

    def clear(self) -> None:
        """Drop the reference to the value (Python cannot wipe a str; the GC frees it)."""
        self._value = None


class SecretServices(Protocol):
    """What the secrets screen may ask for. Every method may block; call it from a worker."""

    def view(self) -> SecretsView: ...
    def detail(self, env: str, path: str) -> SecretDetail: ...
    def reveal(
        self, env: str, path: str, version: int | None, *, mfa_code: str | None = None
    ) -> RevealedValue: ...
    def put(
        self,
        env: str,
        path: str,
        value: str,
        category: str,
        owner: str,
        prefix: str,
        *,
        mfa_code: str | None = None,
    ) -> str: ...
    def generate(
        self,
        env: str,
        path: str,
        category: str,
        owner: str,
        prefix: str,
        *,
        mfa_code: str | None = None,
    ) -> str: ...
    def rotate(
        self,
        env: str,
        path: str,
        key_path: str,
        passphrase: str,
        verify_cmd: str,
        overlap: str,
        *,
        mfa_code: str | None = None,
    ) -> str: ...
    def delete(self, env: str, path: str, *, mfa_code: str | None = None) -> str: ...
    def restore(self, env: str, path: str, *, mfa_code: str | None = None) -> str: ...


def item_of(meta: dict[str, Any]) -> SecretItem:
    return SecretItem(
        env=str(meta["env"]),
        path=str(meta["path"]),
        category=str(meta["category"]),
        security_class=str(meta["class"]),
        owner=str(meta["owner"]),
        version=meta["labels"]["current"],
        state=str(meta["state"]),
        expires=str(meta["expires"]),
        days_left=int(meta["days_left"]),
        rotation_failures=int(meta.get("rotation_failures") or 0),
        destroy_after=str(meta.get("destroy_after") or ""),
    )


def detail_of(meta: dict[str, Any], previous_until: str = "") -> SecretDetail:
    labels = tuple((k, int(v)) for k, v in meta["labels"].items() if v is not None)
    by_version: dict[int, list[str]] = {}
    for k, v in labels:
        by_version.setdefault(v, []).append(k)
    return SecretDetail(
        item=item_of(meta),
        labels=labels,
        versions=tuple(
            VersionItem(
                version=int(v["version"]),
                state=str(v["state"]),
                source=str(v["source"]),
                created=str(v["created"]),
                labels=tuple(by_version.get(int(v["version"]), ())),
            )
            for v in reversed(meta.get("versions", []))
        ),
        created=str(meta.get("created") or ""),
        updated=str(meta.get("updated") or ""),
        deleted_at=str(meta.get("deleted_at") or ""),
        previous_until=previous_until,
    )


class HomeSecretServices:
    """The secrets of a real home, through :mod:`custody.secrets.operator`."""

    def __init__(
        self, home: Path, clock: Callable[[], datetime], pin: Callable[[], str | None]
    ) -> None:
        self.home = home
        self._clock = clock
        self._pin = pin  # the app's PIN box (Services.pin): read per operation, never kept

    def __repr__(self) -> str:
        return f"HomeSecretServices(home={str(self.home)!r})"

    def _run(
        self,
        op: str,
        where: str,
        details: Mapping[str, object],
        token: bool,
        act: Callable[[Any, Any, Any, Any], T],
        *,
        check: tuple[str, str, str, dict[str, Any]] | None = None,
        mfa_code: str | None = None,
    ) -> T:
        """Audit *op* before opening the deployment (logged in to the token when *token*),
        then, as the CLI does, ask access control (:func:`custody.access.local.local_access`)
        whether the local operator may *check* = (action, env, path, extra) (the decision is
        audited; *mfa_code*: a TOTP code, where the policy asks for one), then run
        ``act(vault, deployment, access, operator)``. The deployment is
        closed afterwards.

        Raises:
            UsageError: *token* and no PIN is known (the screen asks for it first).
            AccessDenied: access control refused (with its reason). AuditError.
        """
        from custody.access.local import local_access
        from custody.audit.scope import actor_name
        from custody.config import Home
        from custody.deployment import open_deployment
        from custody.secrets.operator import audited, operator_vault

        home = Home(self.home)
        pin = self._pin() if token else None
        if token and pin is None:
            raise UsageError("No token PIN", "Give --pin-file, or type the PIN when asked.")

        def run() -> T:
            with (
                open_deployment(home, pin) as dep,
                local_access(dep, home) as ac,
            ):
                who = ac.operator(actor_name())
                if check is not None:
                    action, env, path, extra = check
                    ac.authorize(who, action, env, path, mfa_code=mfa_code, **extra)
                vault = operator_vault(dep, home, clock=self._clock, seal=ac.seal)
                return act(vault, dep, ac, who)

        return audited(home, op, where, {**details, "via": "tui"}, run)

    def view(self) -> SecretsView:
        """Every secret of every environment (metadata only), audited as ``secret list``.

        Raises:
            ConfigError: no deployment. StorageError: the store cannot be read. AuditError.
        """
        from custody.secrets.categories import Category

        home_name = Path(self.home).name

        def act(v: Any, dep: Any, ac: Any, who: Any) -> SecretsView:
            seen = ac.visible(who, "list", dep.store.secrets(None, ""), scope="*:")
            keep = {(r.env, r.path) for r in seen}
            items = [m for m in v.list_secrets() if (m["env"], m["path"]) in keep]
            return SecretsView(
                hidden=len(v.list_secrets()) - len(items),
                environments=tuple(v.policy.environments),
                items=tuple(item_of(m) for m in items),
                categories=tuple(c.value for c in Category),
            )

        return self._run("secret list", home_name, {"prefix": ""}, False, act)

    def detail(self, env: str, path: str) -> SecretDetail:
        """One secret's labels and versions (no decrypt), audited as ``secret show``."""
        from custody.secrets.operator import target

        def act(v: Any, dep: Any, ac: Any, who: Any) -> SecretDetail:
            row = dep.store.secret(env, path)
            until = (row.previous_until or "") if row is not None else ""
            return detail_of(v.show(env, path), until)

        details = {"env": env, "path": path}
        return self._run(
            "secret show", target(env, path), details, False, act,
            check=("metadata", env, path, {}),
        )  # fmt: skip

    def reveal(
        self, env: str, path: str, version: int | None, *, mfa_code: str | None = None
    ) -> RevealedValue:
        """Decrypt one version (``current`` when *version* is None): an audited
        ``secret get``. A soft-deleted secret is refused and raises its alert.

        Raises:
            SecretUnavailable, SecretNotFound, IntegrityError, HsmError, AuditError.
        """
        from custody.secrets.operator import target

        def act(v: Any, dep: Any, ac: Any, who: Any) -> RevealedValue:
            r = v.get(env, path, version=version)
            return RevealedValue(r.env, r.path, r.version, r.value)

        details: dict[str, object] = {"env": env, "path": path}
        if version is not None:
            details["version"] = version
        return self._run(
            "secret get",
            target(env, path),
            details,
            True,
            act,
            check=("read", env, path, {}),
            mfa_code=mfa_code,
        )

    def _written(self, w: Any) -> str:
        what = "created" if w.created else "new version"
        return f"{w.env}:{w.path} {what} v{w.version}, expires {w.expires[:10]}"

    def put(
        self,
        env: str,
        path: str,
        value: str,
        category: str,
        owner: str,
        prefix: str,
        *,
        mfa_code: str | None = None,
    ) -> str:
        """Store a value the operator typed (checked against its category's rule): an
        audited ``secret put``.

        Raises:
            WeakSecret, CasMismatch, UsageError, SecretUnavailable, HsmError, AuditError.
        """
        from custody.secrets import parse_category
        from custody.secrets.operator import target

        cat = parse_category(category) if category else None
        details = _write_details(env, path, category, owner, prefix)

        def act(v: Any, dep: Any, ac: Any, who: Any) -> str:
            w = v.put(env, path, value, category=cat, owner=owner or None, prefix=prefix or None)
            return self._written(w)

        return self._run(
            "secret put", target(env, path), details, True, act,
            check=("write", env, path, {"category": category or None}), mfa_code=mfa_code,
        )  # fmt: skip

    def generate(
        self,
        env: str,
        path: str,
        category: str,
        owner: str,
        prefix: str,
        *,
        mfa_code: str | None = None,
    ) -> str:
        """A new version made to the category's standard from the token's RNG: an audited
        ``secret generate``. The value is never returned."""
        from custody.secrets import parse_category
        from custody.secrets.operator import target

        cat = parse_category(category) if category else None
        details = _write_details(env, path, category, owner, prefix)

        def act(v: Any, dep: Any, ac: Any, who: Any) -> str:
            w = v.generate(env, path, category=cat, owner=owner or None, prefix=prefix or None)
            return self._written(w)

        return self._run(
            "secret generate", target(env, path), details, True, act,
            check=("write", env, path, {"category": category or None}), mfa_code=mfa_code,
        )  # fmt: skip

    def rotate(
        self,
        env: str,
        path: str,
        key_path: str,
        passphrase: str,
        verify_cmd: str,
        overlap: str,
        *,
        mfa_code: str | None = None,
    ) -> str:
        """The verified rotation of ``custody secret rotate`` (:mod:`ceremonies.secret_rotation`):
        signed by the super-admin key at *key_path*, recorded in a transcript bundle, audited
        as ``secret rotate``.

        Raises:
            PolicyError: the signer is not an enrolled super-admin, the secret not active.
            UsageError: a bad overlap. TranscriptError, HsmError, AuditError.
        """
        from ceremonies.participants import TokenSigner, load_signer
        from ceremonies.secret_rotation import parse_duration, rotate
        from custody.audit.log import AuditLog
        from custody.config import Home
        from custody.secrets.operator import target

        if not key_path:
            raise UsageError("Give the super-admin key file", "NAME.key.pem or NAME.token.json.")
        seconds = parse_duration(overlap or "24h")
        signer = load_signer(Path(key_path).expanduser(), passphrase)
        home = Home(self.home)

        def entries() -> list[dict[str, Any]]:
            log = AuditLog.for_home(home)
            try:
                return [json.loads(line) for line in log.lines()]
            finally:
                log.close()

        def act(v: Any, dep: Any, ac: Any, who: Any) -> str:
            o = rotate(
                dep, v, env, path, signer, verify_cmd=verify_cmd or None,
                overlap_seconds=seconds, audit_entries=entries,
            )  # fmt: skip
            head = "rotated: " if o.ok else "NOT rotated: "
            return f"{head}{o.detail} (record {Path(o.bundle).name})"

        try:
            return str(
                self._run(
                    "secret rotate",
                    target(env, path),
                    {"env": env, "path": path},
                    True,
                    act,
                    check=("rotate", env, path, {}),
                    mfa_code=mfa_code,
                )
            )
        finally:
            if isinstance(signer, TokenSigner):
                signer.close()

    def delete(self, env: str, path: str, *, mfa_code: str | None = None) -> str:
        """Soft delete: reads refused and reported; restore works in the window."""
        from custody.secrets.operator import target

        def act(v: Any, dep: Any, ac: Any, who: Any) -> str:
            out = v.delete(env, path)
            return f"{env}:{path} deleted; restore works until {str(out['destroy_after'])[:16]}"

        return str(
            self._run(
                "secret delete",
                target(env, path),
                {"env": env, "path": path},
                False,
                act,
                check=("delete", env, path, {}),
                mfa_code=mfa_code,
            )
        )

    def restore(self, env: str, path: str, *, mfa_code: str | None = None) -> str:
        from custody.secrets.operator import target

        def act(v: Any, dep: Any, ac: Any, who: Any) -> str:
            v.restore(env, path)
            return f"{env}:{path} restored"

        return self._run(
            "secret restore", target(env, path), {"env": env, "path": path}, False, act,
            # as the CLI: restoring is the delete right
            check=("delete", env, path, {}), mfa_code=mfa_code,
        )  # fmt: skip


def _write_details(
    env: str, path: str, category: str, owner: str, prefix: str
) -> dict[str, object]:
    d: dict[str, object] = {"env": env, "path": path, "label": "current"}
    for k, val in (("category", category), ("owner", owner), ("prefix", prefix)):
        if val:
            d[k] = val[:200]
    return d


def secret_services(app: Any) -> SecretServices:
    """The app's secret services, created on first use (tests may preset
    ``app.secret_services``)."""
    svc = getattr(app, "secret_services", None)
    if svc is None:
        svc = HomeSecretServices(app.settings.home, app.settings.clock, app.services.pin)
        app.secret_services = svc
    return svc


__all__ = [
    "MASK",
    "SHORT_CATEGORY",
    "HomeSecretServices",
    "RevealedValue",
    "SecretDetail",
    "SecretItem",
    "SecretServices",
    "SecretsView",
    "VersionItem",
    "secret_services",
]
