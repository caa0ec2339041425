"""Headless ceremony sessions: drive one ceremony from code (the TUI, the CLI, tests).

:class:`CeremonySession` (:mod:`ceremonies.session.session`) opens a home through the one
door, drives the runner, checks shares as they are handed in with the one share checker
(:mod:`ceremonies.sharecheck`), collects approvals, makes transport offers and takes sealed
hand-ins, and reports a public :class:`SessionState` (:mod:`ceremonies.session.state`).
"""

from ceremonies.session.session import DUPLICATE, CeremonySession
from ceremonies.session.state import SessionState

__all__ = ["DUPLICATE", "CeremonySession", "SessionState"]
