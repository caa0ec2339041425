"""Consumers of a secret and the versions they acknowledge (issue 17, rotation that
services acknowledge).

A principal that reads a secret through the API becomes one of its registered consumers
(:meth:`Consumers.register`). After a rotation each consumer acknowledges the version it now
uses (:meth:`Consumers.ack`, authenticated by the caller's identity at the API). When every
registered consumer has acknowledged the ``current`` version, :meth:`Consumers.settle`
revokes ``previous`` at once instead of at the end of the overlap window; until then
``previous`` stays readable for the window, and :meth:`Consumers.stragglers` names who has
not moved. The state is kept in the store's ``meta`` table (one JSON document per secret),
so every store adapter has it.
"""

from __future__ import annotations

import json
from typing import Any

from custody.clock import iso, utcnow
from custody.secrets.vault import Vault


def _key(env: str, path: str) -> str:
    return f"secret-consumers:{env}:{path}"


class Consumers:
    """Registered consumers and acknowledgements of one vault's secrets."""

    def __init__(self, vault: Vault) -> None:
        self.vault = vault
        self.store = vault.store

    def _doc(self, env: str, path: str) -> dict[str, Any]:
        raw = self.store.get_meta(_key(env, path))
        doc = json.loads(raw) if raw else {}
        return doc if isinstance(doc, dict) else {}

    def _save(self, env: str, path: str, doc: dict[str, Any]) -> None:
        with self.store.transaction():
            self.store.set_meta(_key(env, path), json.dumps(doc, sort_keys=True))

    def register(self, env: str, path: str, name: str) -> bool:
        """Make *name* a consumer of (env, path). Returns True when it is new."""
        doc = self._doc(env, path)
        if name in doc:
            return False
        doc[name] = {"version": None, "at": None}
        self._save(env, path, doc)
        return True

    def ack(self, env: str, path: str, name: str, version: int) -> dict[str, Any]:
        """Record that consumer *name* now uses *version* (registering it if need be)."""
        doc = self._doc(env, path)
        doc[name] = {"version": version, "at": iso(utcnow())}
        self._save(env, path, doc)
        return self.state(env, path)

    def state(self, env: str, path: str) -> dict[str, Any]:
        """Consumers, the version each acknowledged, and who has not acknowledged current."""
        meta = self.vault.show(env, path)
        cur = meta["labels"]["current"]
        doc = self._doc(env, path)
        return {
            "current": cur,
            "previous": meta["labels"]["previous"],
            "consumers": {n: d["version"] for n, d in sorted(doc.items())},
            "stragglers": sorted(n for n, d in doc.items() if d["version"] != cur),
        }

    def stragglers(self, env: str, path: str) -> list[str]:
        return list(self.state(env, path)["stragglers"])

    def settle(self, env: str, path: str) -> int | None:
        """Revoke ``previous`` when every registered consumer acknowledged ``current``.
        Returns the revoked version, or None (no previous, no consumers, or stragglers)."""
        st = self.state(env, path)
        if st["previous"] is None or not st["consumers"] or st["stragglers"]:
            return None
        return self.vault.revoke_previous(env, path)
