"""Measuring: metrics, statistics, SLOs, validity, sizing, rooflines, the cell summary."""
