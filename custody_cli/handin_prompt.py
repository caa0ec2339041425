"""The hand-in at a terminal: share words typed with echo off, checked word by word.

A custodian types their share's words at a hidden prompt (the terminal's echo is off for
the whole hand-in, as ``getpass`` does for one line), a line at a time: one word, a few,
or all of them. Each word is checked as it is given (a unique 4-letter prefix is enough,
SLIP-0039) and a wrong one is named by its position and asked again; once all words are
in, the RS1024 checksum names the wrong word when it can, and the share is matched
against the share set before its envelope is asked for
(:func:`ceremonies.sharecheck.check_typed`, the one share checker the TUI uses too). An
input that looks like a path is read as a ``NAME.share.txt`` file (envelope beside it).
A mistyped path or a bad share rejects only that share, with a typed error; the shares
given before it stay counted.

Remote hand-ins wait for their short authentication string (SAS): the coordinator types
the words the custodian reads out, and words that differ reject the share.

Nothing here prints a share word: feedback names positions, custodians and groups only.
"""

from __future__ import annotations

import sys
import termios
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ceremonies.sharecheck import LiveCheck, ShareSet, check_typed, check_words
from custody.errors import ConfigError, CustodyError

WORD_COUNTS = (20, 33)
RETRIES = 3


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def say_error(err: CustodyError, indent: str = "  ") -> None:
    """A typed error as the CLI prints it (title and hint), without a traceback."""
    say(f"{indent}error: {err.title}")
    if err.hint:
        say(f"{indent}hint: {err.hint}")


def echo_off() -> Any:
    """Turn the terminal's echo off for the whole hand-in (restored on any exit, Ctrl-C
    included). Set with TCSANOW, not getpass's TCSAFLUSH: lines a custodian pastes at
    once all arrive hidden and none is thrown away."""
    return _echo(False)


@contextmanager
def _echo(on: bool) -> Iterator[None]:
    fd = sys.stdin.fileno()
    try:
        old = termios.tcgetattr(fd)
    except termios.error:
        yield
        return
    new = termios.tcgetattr(fd)
    new[3] = (new[3] | termios.ECHO) if on else (new[3] & ~termios.ECHO)
    termios.tcsetattr(fd, termios.TCSANOW, new)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, old)


def _readline(prompt: str, *, echo: bool) -> str | None:
    sys.stderr.write(prompt)
    sys.stderr.flush()
    with _echo(echo):
        line = sys.stdin.readline()
    if not echo:
        sys.stderr.write("\n")  # the Enter the terminal did not echo
        sys.stderr.flush()
    return line.rstrip("\r\n") if line else None


def hidden(prompt: str) -> str | None:
    """One line read with echo off (None at end of input)."""
    return _readline(prompt, echo=False)


def visible(prompt: str) -> str | None:
    """One line read with echo on (public answers: an envelope path, SAS words)."""
    return _readline(prompt, echo=True)


def looks_like_path(line: str) -> bool:
    t = line.strip()
    if len(t.split()) != 1:
        return False
    return "/" in t or t.startswith(("~", ".")) or t.endswith((".txt", ".json"))


def read_share_file(line: str) -> tuple[str, str, bytes]:
    """(custodian name from the file name, the words, the envelope beside it).

    Raises:
        ConfigError: the file or its envelope cannot be read.
    """
    p = Path(line.strip()).expanduser()
    name = p.name.removesuffix(".txt").removesuffix(".share")
    env = p.with_name(f"{name}.envelope.json")
    try:
        text = p.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"Cannot read the share file {p}",
            "Check the path (typed with echo off), or type the share's words instead.",
        ) from exc
    try:
        envelope = env.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"Cannot read the envelope {env.name} beside {p.name}",
            "Put NAME.envelope.json beside NAME.share.txt.",
        ) from exc
    return name, text, envelope


def read_envelope(text: str) -> bytes:
    """Envelope text as pasted (JSON, from the card's QR code) or the path of the file.

    Raises:
        ConfigError: the path cannot be read.
    """
    t = text.strip()
    if t.startswith("{"):
        return t.encode()
    p = Path(t).expanduser()
    try:
        return p.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"Cannot read the envelope file {p}",
            "Give the path of NAME.envelope.json, or paste the envelope text from the "
            "card's QR code.",
        ) from exc


def _take(words: list[str], line: str) -> bool:
    """Append the words of *line* to *words*, checking each; False at a wrong word (named
    by position; the words after it on that line are dropped)."""
    start = len(words) + 1
    for tok in line.split():
        pos = len(words) + 1
        w = check_words(tok + " ")[0]
        if w.error or w.word is None:
            why = w.error or "unknown word"
            if why == "too short":
                why = "too short or not unique (type at least 4 letters)"
            say(f"  word {pos}: {why}; type word {pos} again")
            return False
        words.append(w.word)
        if len(words) == WORD_COUNTS[-1]:
            break
    if len(words) >= start:
        span = f"word {start}" if len(words) == start else f"words {start}-{len(words)}"
        say(f"  {span} ok")
    return True


def type_words(
    first: str, sset: ShareSet | None, ask: Callable[[str], str | None] = hidden
) -> tuple[list[str], LiveCheck] | None:
    """Read one share's words, starting with the line *first*, until they form a share
    that matches the share set (then its check is ``incomplete``: the envelope is next).

    Returns:
        (the full words, the check), or None when the share is abandoned (an empty line
        or end of input) or rejected (told why, by position where the checksum can say).
    """
    words: list[str] = []
    line: str | None = first
    fixes = 0
    while True:
        if line is None or not line.strip():
            say("  share abandoned; the words typed for it are forgotten")
            return None
        _take(words, line)
        n = len(words)
        c: LiveCheck | None = None
        if n in WORD_COUNTS:
            c = check_typed("typed", " ".join(words) + " ", None, sset)
            if n == WORD_COUNTS[0] and c.status == "rejected" and not c.group:
                c = None  # not a 20-word share: go on to 33
        while c is not None and c.status == "rejected" and c.word_errors and fixes < RETRIES:
            pos = c.word_errors[0][0]
            say(f"  the checksum fails: word {pos} is wrong; type word {pos} again")
            fix = ask(f"word {pos}: ")
            if fix is None or not fix.strip():
                say("  share abandoned; the words typed for it are forgotten")
                return None
            w = check_words(fix.split()[0] + " ")[0]
            fixes += 1
            if w.word is None:
                say(f"  word {pos}: {w.error or 'unknown word'}")
                continue
            words[pos - 1] = w.word
            c = check_typed("typed", " ".join(words) + " ", None, sset)
        if c is not None:
            if c.status == "rejected":
                say(f"  rejected: {c.reason}; this share is not counted")
                return None
            return words, c
        line = ask(f"word {len(words) + 1}: ")


def ask_envelope(who: str, ask: Callable[[str], str | None] = visible) -> bytes | None:
    """The envelope of *who*'s share, as a path or pasted text (asked again when the path
    cannot be read; None when abandoned)."""
    for _ in range(RETRIES):
        text = ask(f"envelope of {who} (path of {who}.envelope.json, or the QR text): ")
        if text is None or not text.strip():
            return None
        try:
            return read_envelope(text)
        except ConfigError as err:
            say_error(err)
    return None


def confirm_sas(session: Any, asked: set[str]) -> None:
    """At a terminal, ask the coordinator to type the SAS of each remote hand-in that
    waits for it (once per custodian per command); an empty line leaves it held."""
    for w in session.sas_waiting():
        who = str(w["custodian"])
        if who in asked:
            continue
        asked.add(who)
        say(
            f"remote hand-in {w['source']} of {who} passed its check and is held, NOT "
            "counted, until you confirm its short authentication string (SAS)."
        )
        say(
            f"Ask {who} to read out the 4 words 'custody share send' printed, and type "
            "them (empty line: leave it held)."
        )
        words = visible(f"SAS of {who}: ")
        if words is None or not words.strip():
            say(f"  {who}'s remote hand-in stays held")
            continue
        st = session.confirm_sas(who, words)
        c = next((x for x in reversed(st.checks) if x.custodian == who), None)
        if c is not None and c.status == "ok":
            say(f"  SAS confirmed: {who}'s share is counted")
        else:
            say(
                f"  the SAS differs: {who}'s remote hand-in is rejected and the rejection "
                "is recorded (sas-mismatch). Stop and talk to the custodian: the share "
                "must be treated as exposed."
            )


__all__ = [
    "ask_envelope",
    "confirm_sas",
    "echo_off",
    "hidden",
    "looks_like_path",
    "read_share_file",
    "say",
    "say_error",
    "type_words",
]
