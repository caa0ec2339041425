"""Shared screen plumbing: worker failures go to the app's one error handler."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable
from textual.worker import Worker, WorkerState

T = TypeVar("T")


class Payload(Message, Generic[T]):
    """A message carrying one value, typically a worker's result, as ``value``.

    Subclass it per meaning (``class TailLoaded(Payload[AuditTail])``): Textual routes a
    message by its class name (``on_tail_loaded``).
    """

    def __init__(self, value: T) -> None:
        super().__init__()
        self.value = value


class ServiceScreen(Screen[None]):
    """A screen whose thread workers call :mod:`tui.services.home`.

    Workers are declared ``@work(thread=True, exit_on_error=False)``. They let a
    ``CustodyError`` propagate; this handler hands it to ``App.report_error``, which shows
    the error modal (harlequin's model). Successful results come back as typed Messages.
    """

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state is WorkerState.ERROR and event.worker.error is not None:
            self.app.report_error(event.worker.error)  # type: ignore[attr-defined]


class ItemTable(DataTable[Any]):
    """A row-cursor table whose rows open a detail view on Enter."""

    BINDINGS = [Binding("enter", "select_cursor", "Open")]

    def __init__(self, *, id: str, title: str) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False)
        self.border_title = title
