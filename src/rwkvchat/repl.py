"""The interactive loop: reads input (prompt_toolkit), renders Session events (rich). No chat logic here.

Ctrl-C while a reply streams stops only that reply: a SIGINT handler asks the session to stop at the
next token, so the session closes the turn itself and stays consistent; a second Ctrl-C interrupts
harder (the event iterator is closed, which runs the same bookkeeping). Ctrl-C at the prompt clears
the line; Ctrl-D quits. When stdin or stdout is not a terminal the loop reads plain lines and writes
plain text, so the chat can be scripted (`printf 'hi\\n' | rwkvchat chat`).
"""

from __future__ import annotations

import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console

from . import commands
from .session import Error, Event, ExitRequested, Info, ReplyStart, Session, Stats, Stopped, TokenText

__all__ = ["Repl", "make_console", "printable"]

# C0/C1 control characters other than newline and tab: model output must never drive the terminal.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Model text made safe for a terminal (control characters removed, \n and \t kept)."""
    return _CONTROL.sub("", text)


def make_console(plain: bool, stderr: bool = False) -> Console:
    """A rich console; `plain` (not a terminal, or NO_COLOR) means no escape sequences at all."""
    if plain:
        return Console(
            stderr=stderr,
            color_system=None,
            force_terminal=False,
            highlight=False,
            emoji=False,
            markup=False,
            soft_wrap=True,
        )
    return Console(stderr=stderr, highlight=False, emoji=False, markup=False, soft_wrap=True)


class Repl:
    """Renders a Session's events and feeds it user input until /exit or end of input."""

    def __init__(
        self, session: Session, console: Console, *, interactive: bool, history_path: Path | None = None
    ) -> None:
        self.session = session
        self.console = console
        self.interactive = interactive
        self.history_path = history_path
        self._prompt: Any = None
        t = session.template
        self.prompt_text = f"{t.user}{t.sep} "

    # ---- rendering ----

    def _dim(self, text: str) -> None:
        self.console.print(text, style="dim", markup=False, highlight=False)

    def render(self, events: Iterator[Event]) -> bool:
        """Renders events until they end; returns False when the user asked to exit."""
        previous = signal.getsignal(signal.SIGINT)
        presses = 0

        def on_sigint(signum: int, frame: Any) -> None:
            nonlocal presses
            presses += 1
            if presses > 1:
                raise KeyboardInterrupt
            self.session.interrupt()

        installed = False
        try:
            signal.signal(signal.SIGINT, on_sigint)
            installed = True
        except ValueError:  # Not the main thread: Ctrl-C then raises KeyboardInterrupt, handled below.
            pass
        in_reply = False
        try:
            for e in events:
                if isinstance(e, ReplyStart):
                    in_reply = True
                    if e.speaker:
                        self.console.print(
                            f"{e.speaker}{self.session.template.sep} ", style="bold cyan", end=""
                        )
                elif isinstance(e, TokenText):
                    self.console.print(printable(e.text), end="", markup=False, highlight=False)
                    self.console.file.flush()
                elif isinstance(e, Stopped):
                    if in_reply:
                        self.console.print()
                        in_reply = False
                    if e.reason == "interrupted":
                        self._dim("[stopped]")
                elif isinstance(e, Stats):
                    self._dim(f"{e.generated_tokens} tokens, {e.tokens_per_s:.1f} tokens/s")
                elif isinstance(e, Info):
                    self.console.print(e.message, markup=False, highlight=False)
                elif isinstance(e, Error):
                    self.console.print(f"error: {e.message}", style="red", markup=False, highlight=False)
                elif isinstance(e, ExitRequested):
                    return False
        except KeyboardInterrupt:
            close = getattr(events, "close", None)
            if close is not None:
                close()
            if in_reply:
                self.console.print()
            self._dim("[stopped]")
        finally:
            if installed:
                signal.signal(signal.SIGINT, previous)
        return True

    # ---- input ----

    def _read_line(self, prompt: str) -> str:
        if not self.interactive:
            self.console.print(prompt, end="")
            self.console.file.flush()
            line = sys.stdin.readline()
            if not line:
                raise EOFError
            if not sys.stdin.isatty():
                self.console.print(line.rstrip("\n"), markup=False, highlight=False)
            return line.rstrip("\n")
        if self._prompt is None:
            self._prompt = self._make_prompt()
        return str(self._prompt.prompt(prompt))

    def _make_prompt(self) -> Any:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.completion import WordCompleter
        from prompt_toolkit.history import FileHistory, InMemoryHistory
        from prompt_toolkit.key_binding import KeyBindings

        bindings = KeyBindings()

        @bindings.add("escape", "enter")
        def _newline(event: Any) -> None:
            event.current_buffer.insert_text("\n")

        history: Any = InMemoryHistory()
        if self.history_path is not None:
            try:
                self.history_path.parent.mkdir(parents=True, exist_ok=True)
                history = FileHistory(str(self.history_path))
            except OSError:
                pass
        completer = WordCompleter(commands.completions(), sentence=True, match_middle=False)
        return PromptSession(
            history=history, completer=completer, key_bindings=bindings, complete_while_typing=False
        )

    def read_message(self) -> str:
        """One message: a line, or a block between lines of triple quotes. Raises EOFError on Ctrl-D."""
        line = self._read_line(self.prompt_text)
        stripped = line.strip()
        if not stripped.startswith('"""'):
            return line
        if len(stripped) >= 6 and stripped.endswith('"""'):
            return stripped[3:-3]
        parts = [stripped[3:]] if stripped != '"""' else []
        while True:
            more = self._read_line("... ")
            if more.rstrip().endswith('"""'):
                parts.append(more.rstrip()[:-3])
                return "\n".join(p for p in parts).strip("\n")
            parts.append(more)

    def run(self, startup: Iterator[Event] | None = None) -> int:
        """The loop; returns the exit code (0)."""
        if startup is not None:
            self.render(startup)
        while True:
            # A Ctrl-C anywhere in a turn returns to the prompt, also one that lands between the turn's
            # steps: after render has put the previous SIGINT handler back, a second press of a quick
            # double Ctrl-C raises KeyboardInterrupt here, and must not end the program.
            try:
                line = self.read_message()
                if not line.strip():
                    continue
                if not self.render(self.session.send(line)):
                    return 0
            except KeyboardInterrupt:
                continue
            except EOFError:
                if self.interactive:
                    self.console.print()
                return 0
