"""The evidence of a live home, for every front end (``custody report``, the TUI).

:func:`gather_home` opens the home through the one door without the token (the report
needs no PIN), reads its store and audit log with :func:`custody.report.evidence.gather`,
and closes both again.
"""

from __future__ import annotations

from datetime import datetime

from custody.config import Home
from custody.deployment import open_audit_log, open_deployment
from custody.report.evidence import Evidence, gather
from custody.secrets import SecretPolicy


def gather_home(home: Home, now: datetime) -> Evidence:
    """The compliance evidence of *home* as of *now* (reads only).

    Raises:
        ConfigError: no deployment at *home*. StorageError, AuditError: the store or the
            audit log cannot be read.
    """
    with open_deployment(home, None) as dep:
        log = open_audit_log(home)
        try:
            return gather(
                dep.store,
                log,
                dep.config,
                SecretPolicy.for_home(home.config_path),
                now=now,
                source=f"home {home.root}",
            )
        finally:
            log.close()


__all__ = ["gather_home"]
