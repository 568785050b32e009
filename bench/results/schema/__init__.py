"""JSON Schemas of the result set, shipped with the package."""
