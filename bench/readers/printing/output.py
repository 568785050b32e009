"""Where a verb's tables and messages go.

`terminal`: everything on stdout as a person reads it (tables, notes, progress, messages), the way
nightly logs have always kept it. Every other format: stdout holds only the document (a JSON
envelope, CSV, Markdown, LaTeX), written once when the verb ends well; progress and messages go to
stderr, so `lokaal-bench compare A B --format json | jq` reads clean JSON.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from bench.readers.printing.printers import FORMATS, document, terminal_renderable
from bench.readers.printing.table import Table


def _console(stderr: bool, file: TextIO | None = None) -> Any:
    from rich.console import Console

    stream = file or (sys.stderr if stderr else sys.stdout)
    # Logs of unattended runs are read in editors, not 80-column terminals: keep table rows whole.
    wide = {} if stream.isatty() else {"width": 200}
    return Console(file=file, stderr=stderr, **wide)


class Output:
    def __init__(self, fmt: str = "terminal", kind: str | None = None, stdout: TextIO | None = None,
                 stderr: TextIO | None = None):
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
        self.format = fmt
        self.kind = kind
        self._stdout = stdout
        self.console = _console(False, stdout)  # the table's console (terminal format)
        self.messages = self.console if fmt == "terminal" else _console(True, stderr)  # progress, messages
        self.tables: list[Table] = []

    @property
    def for_people(self) -> bool:
        return self.format == "terminal"

    def table(self, table: Table) -> None:
        """Print a table now (terminal) or keep it for the document written at close."""
        self.tables.append(table)
        if self.format == "terminal":
            from rich.text import Text

            self.console.print(terminal_renderable(table))
            for note in table.notes:
                self.console.print(Text(note.text, style=note.style or ""), highlight=False)
        elif self.format == "csv":  # CSV has no place for notes: they are messages
            for note in table.notes:
                self.message(note.text)

    def message(self, text: str, style: str | None = None) -> None:
        """A line for the person running the verb (stdout in the terminal format, else stderr)."""
        from rich.text import Text

        self.messages.print(Text(text, style=style or ""), highlight=False, soft_wrap=True)

    @contextmanager
    def status(self, text: str) -> Iterator[Any]:
        """A spinner while something slow runs (shown only on a terminal)."""
        with self.messages.status(text) as status:
            yield status

    def close(self) -> None:
        if self.format != "terminal" and self.tables:
            stream = self._stdout or sys.stdout
            stream.write(document(self.tables, self.format, self.kind))
            stream.flush()

    def __enter__(self) -> Output:
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        if kind is None:  # a verb that failed writes no half document
            self.close()
