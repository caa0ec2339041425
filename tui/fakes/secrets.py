"""Fixed secrets for the snapshot tests and the screenshots (no disk, no token).

:class:`StaticSecretServices` implements :class:`tui.services.secrets.SecretServices` on
fixed metadata; a reveal returns the fixed value given for that secret, so a test can
plant a canary and check it never shows unless revealed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from custody.errors import UsageError
from custody.secrets.categories import Category
from tui.services.secrets import (
    RevealedValue,
    SecretDetail,
    SecretItem,
    SecretsView,
    VersionItem,
)


@dataclass
class StaticSecretServices:
    """Fixed views. ``values`` maps ``ENV:PATH`` to what a reveal returns."""

    view_: SecretsView
    details: dict[str, SecretDetail] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict, repr=False)
    calls: list[str] = field(default_factory=list)  # what was asked, never a value

    def view(self) -> SecretsView:
        return self.view_

    def detail(self, env: str, path: str) -> SecretDetail:
        key = f"{env}:{path}"
        if key in self.details:
            return self.details[key]
        item = next(i for i in self.view_.items if i.key == key)
        v = item.version or 1
        return SecretDetail(
            item=item,
            labels=(("current", v),),
            versions=(
                VersionItem(
                    version=v,
                    state="live",
                    source="hsm-rng",
                    created="2027-02-01T09:00:00+00:00",
                    labels=("current",),
                ),
            ),
        )

    def reveal(self, env: str, path: str, version: int | None) -> RevealedValue:
        key = f"{env}:{path}"
        self.calls.append(f"reveal {key}")
        item = next(i for i in self.view_.items if i.key == key)
        return RevealedValue(env, path, version or item.version or 1, self.values.get(key, ""))

    def _change(self, what: str, env: str, path: str, **kw: object) -> str:
        self.calls.append(f"{what} {env}:{path}")
        items = list(self.view_.items)
        for n, i in enumerate(items):
            if i.key == f"{env}:{path}":
                items[n] = replace(i, **kw)  # type: ignore[arg-type]
        self.view_ = replace(self.view_, items=tuple(items))
        return f"{env}:{path} {what}"

    def put(self, env: str, path: str, value: str, category: str, owner: str, prefix: str) -> str:
        self.calls.append(f"put {env}:{path}")
        return f"{env}:{path} (fixed data: nothing stored)"

    def generate(self, env: str, path: str, category: str, owner: str, prefix: str) -> str:
        self.calls.append(f"generate {env}:{path}")
        return f"{env}:{path} (fixed data: nothing stored)"

    def rotate(
        self,
        env: str,
        path: str,
        key_path: str,
        passphrase: str,
        verify_cmd: str,
        overlap: str,
    ) -> str:
        raise UsageError("Fixed data", "StaticSecretServices does not rotate.")

    def delete(self, env: str, path: str) -> str:
        return self._change("deleted", env, path, state="deprecated")

    def restore(self, env: str, path: str) -> str:
        return self._change("restored", env, path, state="active")


def sample_secrets() -> SecretsView:
    """Three environments; due, overdue, rotating and deleted secrets among them."""

    def s(env: str, path: str, cat: str, cls: str, owner: str, v: int, **kw: object) -> SecretItem:
        base: dict[str, object] = {
            "state": "active",
            "expires": "2027-06-01T09:00:00+00:00",
            "days_left": 91,
        }
        base.update(kw)
        return SecretItem(
            env=env,
            path=path,
            category=cat,
            security_class=cls,
            owner=owner,
            version=v,
            **base,  # type: ignore[arg-type]
        )

    items = (
        s("prod", "payments/stripe/api-key", "external-api-key", "medium", "payments", 3),
        s(
            "prod",
            "payments/db/password",
            "database-credential",
            "high",
            "payments",
            7,
            expires="2027-03-09T09:00:00+00:00",
            days_left=8,
        ),
        s(
            "prod",
            "identity/jwt/signing-secret",
            "jwt-secret",
            "medium",
            "identity",
            2,
            expires="2027-02-20T09:00:00+00:00",
            days_left=-9,
            rotation_failures=1,
        ),
        s(
            "prod",
            "billing/webhooks/partner-notifications",
            "webhook-secret",
            "medium",
            "billing",
            1,
            state="rotating",
        ),
        s(
            "staging",
            "payments/db/password",
            "database-credential",
            "high",
            "payments",
            2,
            state="deprecated",
            destroy_after="2027-03-06T12:00:00+00:00",
        ),
        s("staging", "search/config", "configuration-secret", "low", "search", 1, days_left=300),
        s("dev", "local/test-key", "test-api-key", "low", "devex", 1, days_left=350),
    )
    return SecretsView(
        environments=("dev", "staging", "prod"),
        items=items,
        categories=tuple(c.value for c in Category),
    )
