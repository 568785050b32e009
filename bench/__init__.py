"""lokaal-bench: benchmark open-weight models on your own hardware, offline.

Importing this package must stay cheap: no torch, no transformers, no vLLM here.
"""

__version__ = "0.1.0"
