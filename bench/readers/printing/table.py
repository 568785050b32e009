"""The one row model every verb prints: columns (name, heading, unit, numeric or not, a formatter)
and rows of plain values, with a title, a caption and notes. The printers (bench.readers.printing.
printers) turn it into a terminal table, Markdown, CSV, LaTeX or a versioned JSON envelope.

A column is shown to people (terminal, Markdown, LaTeX), written for machines (CSV, JSON), or both:
people read `TTFT ms p50/p99` in one column where machines get `ttft_p50` and `ttft_p99` as numbers.
Rows hold the machines' plain values, in the column's unit; a people-only column may hold text made
for reading. People's headings may name a display unit (GiB) that their formatter scales to.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Row = dict[str, Any]
Formatter = Callable[[Any, Mapping[str, Any]], str]  # (the value, its whole row) -> the text people read
Styler = Callable[[Any, Mapping[str, Any]], "str | None"]  # a rich style for the terminal, or None


def plain_text(value: Any) -> str:
    """How a value reads when its column names no formatter: '-' for nothing, numbers with commas."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, list | tuple):
        return " ".join(plain_text(v) for v in value)
    return str(value)


def fixed(digits: int = 1, scale: float = 1.0, suffix: str = "", signed: bool = False) -> Formatter:
    """Numbers to `digits` decimals (times `scale`), thousands separated; '-' for nothing."""
    sign = "+" if signed else ""

    def text(value: Any, row: Mapping[str, Any]) -> str:
        if value is None or value != value:
            return "-"
        return f"{value * scale:{sign},.{digits}f}{suffix}"

    return text


def percent(digits: int = 0, signed: bool = False) -> Formatter:
    """A fraction as a percentage: 0.123 -> '12%' (or '+12.3%')."""
    sign = "+" if signed else ""

    def text(value: Any, row: Mapping[str, Any]) -> str:
        return "-" if value is None or value != value else f"{value:{sign}.{digits}%}"

    return text


def yes_no(value: Any, row: Mapping[str, Any]) -> str:
    return "-" if value is None else "yes" if value else "no"


@dataclass(frozen=True)
class Column:
    name: str  # the key in each row, and the field name in CSV and JSON
    heading: str | None = None  # what the header shows (default: the name); may hold a line break
    unit: str | None = None  # the unit of the column's values
    numeric: bool = False  # right-aligned for people
    format: Formatter | None = None  # how people read the value (default: plain_text)
    style: Styler | None = None  # the terminal's style for a cell (else the row's style)
    people: bool = True  # shown by terminal, Markdown and LaTeX
    machines: bool = True  # written by CSV and JSON
    no_wrap: bool = False  # the terminal keeps the cell on one line
    machine_heading: str | None = None  # CSV's header (default: the name, with the unit in brackets)

    @property
    def title(self) -> str:
        return self.heading or self.name

    @property
    def csv_heading(self) -> str:
        if self.machine_heading:
            return self.machine_heading
        return f"{self.name} ({self.unit})" if self.unit else self.name

    def text(self, row: Mapping[str, Any]) -> str:
        value = row.get(self.name)
        return self.format(value, row) if self.format else plain_text(value)

    def describe(self) -> dict[str, Any]:
        """The column as the JSON envelope lists it."""
        return {"name": self.name, "heading": " ".join(self.title.split()), "unit": self.unit,
                "numeric": self.numeric}


@dataclass(frozen=True)
class Note:
    text: str
    style: str | None = None  # terminal only: e.g. "red" for a warning


@dataclass
class Table:
    kind: str  # what the JSON envelope calls it: the verb's name, or a part of the verb's output
    columns: list[Column]
    rows: list[Row] = field(default_factory=list)
    title: str | None = None
    caption: str | None = None
    notes: list[Note] = field(default_factory=list)  # lines after the table: reasons, totals, caveats
    data: dict[str, Any] = field(default_factory=dict)  # JSON only: what the verb knows beyond the rows
    row_style: Callable[[Mapping[str, Any]], str | None] | None = None  # terminal: e.g. strike INVALID rows
    header_style: str | None = None

    def add(self, **values: Any) -> None:
        self.rows.append(values)

    def note(self, text: str, style: str | None = None) -> None:
        self.notes.append(Note(text, style))

    def for_people(self) -> list[Column]:
        return [c for c in self.columns if c.people]

    def for_machines(self) -> list[Column]:
        return [c for c in self.columns if c.machines]


def rows_table(rows: list[Row], columns: list[str], headings: Mapping[str, str] | None = None,
               kind: str = "rows", title: str | None = None) -> Table:
    """A table of plain dict rows, columns named by key, `headings` shown by every format (CSV too):
    a column is numeric when all its values are numbers (or missing)."""
    headings = headings or {}

    def is_numeric(name: str) -> bool:
        return all(isinstance(r.get(name), int | float) or r.get(name) is None for r in rows)

    return Table(kind, [Column(c, headings.get(c), numeric=is_numeric(c), machine_heading=headings.get(c))
                        for c in columns],
                 [dict(r) for r in rows], title=title)
