"""Fixed ceremony data for the snapshot tests and the screenshots (no disk, no token)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ceremonies.sharecheck import ShareSet, check_typed
from custody.errors import UsageError
from tui.services.ceremony_views import (
    CardView,
    CeremonyView,
    ShareCheck,
    card_view,
    export_card,
    read_envelope,
)


@dataclass
class StaticCeremonyServices:
    """Fixed views for snapshot tests and screenshots. No disk, no token."""

    current: CeremonyView | None = None
    cards: dict[str, Any] = field(default_factory=dict)  # name -> custody.shares.card.Card
    sset: ShareSet | None = None
    calls: list[str] = field(default_factory=list)
    ceremonies: list[dict[str, Any]] = field(default_factory=list)  # open_ceremonies rows

    def _current(self) -> CeremonyView:
        if self.current is None:
            raise UsageError("No fixed ceremony view", "Pass current= to StaticCeremonyServices.")
        return self.current

    def open_ceremonies(self) -> list[dict[str, Any]]:
        return list(self.ceremonies)

    def start(
        self, kind: str, key_path: str, passphrase: str, params: dict[str, Any]
    ) -> CeremonyView:
        self.calls.append(f"start {kind}")
        return self._current()

    def resume(self, ceremony_id: str, key_path: str, passphrase: str) -> CeremonyView:
        return self._current()

    def view(self) -> CeremonyView | None:
        return self.current

    def check(self, source: str, text: str, envelope: str) -> ShareCheck:
        return check_typed(
            source, text, read_envelope(envelope) if envelope.strip() else None, self.sset
        )

    def hand_in(self, source: str, text: str, envelope: str) -> CeremonyView:
        return self._current()

    def add_approval_file(self, path: str) -> CeremonyView:
        return self._current()

    def sign_approval(self, key_path: str, passphrase: str) -> CeremonyView:
        return self._current()

    def submit(self) -> CeremonyView:
        return self._current()

    def offer(self, ttl: int = 900) -> CeremonyView:
        return self._current()

    def hand_in_sealed(self, blob: str) -> CeremonyView:
        return self._current()

    def confirm_sas(self, custodian: str, words: str) -> CeremonyView:
        return self._current()

    def abort(self, reason: str) -> CeremonyView:
        return self._current()

    def card(self, name: str) -> CardView:
        return card_view(self.cards[name])

    def export_card(self, name: str, path: str) -> Path:
        return export_card(self.cards[name], path)

    def close(self) -> None:
        pass
