"""The ceremony screen's share entry and messages: word completion, the word grid, and
the typed messages its workers post.

Word completion follows the SLIP-0039 rule that a word's first four letters are unique;
the grid shows word positions and their state, never the words themselves (they stay in
the field the custodian is typing in).
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.message import Message
from textual.suggester import Suggester

from tui.services.ceremony import CeremonyView, ShareCheck, check_words, complete_word

STEP_STYLE = {
    "done": "green",
    "running": "bold yellow",
    "waiting": "bold yellow",
    "next": "yellow",
    "pending": "dim",
    "aborted": "red",
}
CHECK_STYLE = {"ok": "green", "rejected": "bold red", "incomplete": "yellow"}


class WordSuggester(Suggester):
    """Completes the word being typed once its prefix is unique (SLIP-0039 4-letter rule)."""

    def __init__(self) -> None:
        super().__init__(use_cache=False, case_sensitive=False)

    async def get_suggestion(self, value: str) -> str | None:
        if not value or value[-1:].isspace():
            return None
        tok = value.rpartition(" ")[2]
        full = complete_word(tok)
        if full is None or full == tok.lower():
            return None
        return value + full[len(tok) :]


class CeremonyUpdated(Message):
    def __init__(self, view: CeremonyView | None) -> None:
        super().__init__()
        self.view = view


class OpenCeremonies(Message):
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        super().__init__()
        self.rows = rows


class ShareChecked(Message):
    def __init__(self, check: ShareCheck) -> None:
        super().__init__()
        self.check = check


def word_grid(text: str, check: ShareCheck | None) -> Text:
    """Word positions with their state: never the words themselves (they stay in the
    field the custodian is typing in)."""
    ws = check_words(text)
    errs = dict(check.word_errors) if check is not None else {}
    out = Text()
    for w in ws:
        err = w.error or errs.get(w.position, "")
        style = "bold white on red" if err else ("green" if w.word else "yellow")
        out.append(f"{w.position:>2}", style=style)
        out.append(" ")
    for p in range(len(ws) + 1, 21):
        out.append(f"{p:>2} ", style="dim")
    if ws and not text[-1:].isspace():
        last = ws[-1]
        if last.word and last.word != last.typed.lower():
            out.append(f"\nword {last.position} completes to a unique word", style="cyan")
    for pos, err in sorted({**{w.position: w.error for w in ws if w.error}, **errs}.items()):
        out.append(f"\nword {pos}: {err}", style="red")
    return out
