"""Readers of result sets: compare, tables, dataframe, report, plots, history, rerun."""
