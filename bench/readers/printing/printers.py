"""Printers in the manner of llama-bench's: each format writes a header, one piece per row and a
footer, so every verb that builds a Table gets every format. People's formats (terminal, Markdown,
LaTeX) show the people's columns through their formatters; machines' formats (CSV, JSON) write
the machines' columns as plain values.

The JSON form is an envelope, versioned by JSON_FORMAT (docs/output-formats.md):
{"lokaal_bench": version, "format": 1, "kind", "title", "caption", "columns", "rows", "notes",
 "tables", "data"}.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from bench.readers.printing.table import Column, Row, Table, rows_table

FORMATS = ("terminal", "markdown", "csv", "latex", "json")
JSON_FORMAT = 1  # raised when a key of the envelope or a column of a verb is renamed, removed or changes meaning


def _flat(text: str) -> str:
    return " ".join(text.split())


class Printer:
    """header, row and footer as lines of text; render joins them."""

    def header(self, table: Table) -> list[str]:
        return []

    def row(self, table: Table, row: Row) -> list[str]:
        return []

    def footer(self, table: Table) -> list[str]:
        return []

    def render(self, table: Table) -> str:
        lines = self.header(table)
        for row in table.rows:
            lines += self.row(table, row)
        lines += self.footer(table)
        return "\n".join(lines) + "\n" if lines else ""


class MarkdownPrinter(Printer):
    """A pipe table; the title, caption and notes follow it (`Table: title` is pandoc's caption)."""

    def header(self, table: Table) -> list[str]:
        columns = table.for_people()
        return ["| " + " | ".join(_flat(c.title) for c in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]

    def row(self, table: Table, row: Row) -> list[str]:
        struck = "strike" in ((table.row_style and table.row_style(row)) or "")
        cells = []
        for column in table.for_people():
            text = column.text(row).replace("|", "\\|").replace("\n", " ")
            cells.append(f"~~{text}~~" if struck and column.style is None and text not in ("", "-") else text)
        return ["| " + " | ".join(cells) + " |"]

    def footer(self, table: Table) -> list[str]:
        lines = [f"Table: {_flat(table.title)}"] if table.title else []
        lines += [_flat(table.caption)] if table.caption else []
        lines += [f"- {note.text}" for note in table.notes]
        return ["", *lines] if lines else []


def latex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"),
                          ("_", r"\_"), ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"),
                          ("^", r"\textasciicircum{}")):
        text = text.replace(char, escaped)
    return text


class LatexPrinter(Printer):
    """A booktabs tabular (numbers right-aligned); the title, caption and notes follow as comments,
    for the paper's own table environment and caption."""

    def header(self, table: Table) -> list[str]:
        columns = table.for_people()
        spec = "".join("r" if c.numeric else "l" for c in columns)
        return [r"\begin{tabular}{" + spec + "}", r"\toprule",
                " & ".join(latex_escape(_flat(c.title)) for c in columns) + r" \\", r"\midrule"]

    def row(self, table: Table, row: Row) -> list[str]:
        return [" & ".join(latex_escape(_flat(c.text(row))) for c in table.for_people()) + r" \\"]

    def footer(self, table: Table) -> list[str]:
        comments = [table.title, table.caption, *(note.text for note in table.notes)]
        return [r"\bottomrule", r"\end{tabular}", *(f"% {latex_escape(_flat(c))}" for c in comments if c)]


def csv_value(value: Any) -> Any:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, list | tuple):
        return " ".join("" if v is None else str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(plain(value), sort_keys=True)
    return value


class CsvPrinter(Printer):
    """One header line and one line per row: the machines' columns, plain values, nothing else
    (a verb's notes go to stderr)."""

    def _line(self, values: list[Any]) -> str:
        out = io.StringIO()
        csv.writer(out, lineterminator="").writerow(values)
        return out.getvalue()

    def header(self, table: Table) -> list[str]:
        return [self._line([c.csv_heading for c in table.for_machines()])]

    def row(self, table: Table, row: Row) -> list[str]:
        return [self._line([csv_value(row.get(c.name)) for c in table.for_machines()])]


def plain(value: Any) -> Any:
    """A value as strict JSON: NaN and infinities as null, tuples as lists, anything else as text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    return str(value)


class JsonPrinter(Printer):
    """The envelope, one row per line (readable, and diffs stay small)."""

    def part(self, table: Table) -> dict[str, Any]:
        return {"kind": table.kind, "title": table.title, "caption": table.caption,
                "columns": [c.describe() for c in table.for_machines()],
                "rows": [self.values(table, row) for row in table.rows],
                "notes": [note.text for note in table.notes]}

    def values(self, table: Table, row: Row) -> dict[str, Any]:
        return {c.name: plain(row.get(c.name)) for c in table.for_machines()}

    def header(self, table: Table) -> list[str]:
        from bench import __version__

        head = {"lokaal_bench": __version__, "format": JSON_FORMAT, "kind": table.kind, "title": table.title,
                "caption": table.caption}
        lines = ["{"] + [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
        columns = ",\n".join("    " + json.dumps(c.describe()) for c in table.for_machines())
        return [*lines, '  "columns": [', columns, "  ],", '  "rows": [']

    def row(self, table: Table, row: Row) -> list[str]:
        return ["    " + json.dumps(self.values(table, row), allow_nan=False)]

    def footer(self, table: Table, others: Sequence[Table] = ()) -> list[str]:
        tail = {"notes": [note.text for note in table.notes], "tables": [self.part(t) for t in others],
                "data": plain(table.data)}
        body = ",\n".join(f"  {json.dumps(k)}: " + json.dumps(v, indent=2, allow_nan=False).replace("\n", "\n  ")
                          for k, v in tail.items())
        return ["  ],", body, "}"]

    def render(self, table: Table, others: Sequence[Table] = ()) -> str:
        rows = ",\n".join(line for row in table.rows for line in self.row(table, row))
        lines = [*self.header(table), *([rows] if rows else []), *self.footer(table, others)]
        return "\n".join(lines) + "\n"


PRINTERS: dict[str, type[Printer]] = {"markdown": MarkdownPrinter, "latex": LatexPrinter, "csv": CsvPrinter,
                                      "json": JsonPrinter}


def document(tables: Sequence[Table], fmt: str, kind: str | None = None) -> str:
    """The text of a verb's tables in a text format. JSON is one envelope: the table of the verb's
    kind (else the first) with the others under "tables"; the other formats print them in order."""
    if not tables:
        return ""
    if fmt == "json":
        main = next((t for t in tables if t.kind == kind), tables[0])
        return JsonPrinter().render(main, [t for t in tables if t is not main])
    if fmt not in PRINTERS:
        raise ValueError(f"unknown format {fmt!r}")
    printer = PRINTERS[fmt]()
    return "\n".join(printer.render(t) for t in tables)


def render(rows: list[Row], columns: list[str], fmt: str, headings: Mapping[str, str]) -> str:
    """Plain dict rows in a text format (see rows_table): for scripts and quick tables."""
    return document([rows_table(rows, columns, headings)], fmt)


def terminal_renderable(table: Table) -> Any:
    """The table as a rich Table: people's columns, numbers right-aligned, styles per row and cell.
    Cell text is escaped, so brackets in labels never read as markup."""
    from rich.markup import escape
    from rich.table import Table as RichTable

    shown = RichTable(title=escape(table.title) if table.title else None,
                      caption=escape(table.caption) if table.caption else None,
                      **({"header_style": table.header_style} if table.header_style else {}))
    columns: list[Column] = table.for_people()
    for column in columns:
        shown.add_column(column.title, justify="right" if column.numeric else "left", no_wrap=column.no_wrap)
    for row in table.rows:
        row_style = table.row_style(row) if table.row_style else None
        cells = []
        for column in columns:
            style = column.style(row.get(column.name), row) if column.style else row_style
            text = escape(column.text(row))
            cells.append(f"[{style}]{text}[/]" if style else text)
        shown.add_row(*cells)
    return shown
