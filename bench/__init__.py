"""lokaal-bench: benchmark open-weight models on your own hardware, offline.

Importing this package must stay cheap: no torch, no transformers, no vLLM here.
"""

__version__ = "0.1.0"


def load(paths, per: str = "cell"):  # type: ignore[no-untyped-def]
    """Result sets as a pandas DataFrame (see bench.readers.dataframe); imported on use, so that
    `import bench` stays light."""
    from bench.readers.dataframe import load as _load

    return _load(paths, per=per)
