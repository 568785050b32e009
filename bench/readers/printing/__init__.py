"""One row model (Table, Column) and the printers every verb prints it through."""

from bench.readers.printing.output import Output
from bench.readers.printing.printers import FORMATS, JSON_FORMAT, document, render, terminal_renderable
from bench.readers.printing.table import Column, Note, Table, fixed, percent, plain_text, rows_table, yes_no

__all__ = ["FORMATS", "JSON_FORMAT", "Column", "Note", "Output", "Table", "document", "fixed", "percent",
           "plain_text", "render", "rows_table", "terminal_renderable", "yes_no"]
