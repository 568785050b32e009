"""Served models over HTTP: an OpenAI-compatible streaming client and a calibration endpoint.

Neither imports torch or vLLM; both speak HTTP/1.1 over asyncio streams to loopback or to the
endpoints a profile names (the network guard refuses anything else).
"""
