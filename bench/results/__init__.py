"""The result-set format: records, write, read, upgrade, integrity, schema."""
