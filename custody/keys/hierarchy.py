"""The versioned key hierarchy of one deployment: roots, KEKs and wrapped objects.

:class:`KeyHierarchy` is the one handle callers hold (the CLI, the TUI, the ceremonies and
re-key all take one); its parts live by level:

* :mod:`custody.keys.roots` - root versions on the token, and sealing KEKs under them;
* :mod:`custody.keys.keks` - KEK versions per branch and their staged retirement;
* :mod:`custody.keys.objects` - DEKs and secret values wrapped under a KEK.

All state is in the store (:mod:`custody.store.port`); times come from :mod:`custody.clock`.
"""

from __future__ import annotations

from custody.keys.keks import check_branch
from custody.keys.objects import ObjectKeys, VerifyReport, object_context, object_digest
from custody.keys.roots import ROOT_LABEL, kek_context
from custody.store.rows import KekVersion, RootVersion


class KeyHierarchy(ObjectKeys):
    """Operations on the hierarchy of one deployment (store + HSM)."""


__all__ = [
    "ROOT_LABEL",
    "KekVersion",
    "KeyHierarchy",
    "RootVersion",
    "VerifyReport",
    "check_branch",
    "kek_context",
    "object_context",
    "object_digest",
]
