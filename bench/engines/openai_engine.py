"""Engine: a model served behind an OpenAI-compatible API (vLLM, llama.cpp, TGI, SGLang, Ollama...).

The engine holds no model: it knows the endpoints, builds request bodies (token-id prompts, exact
lengths with ignore_eos and min_tokens), and reads the model's vocabulary from its local config
for synthetic prompts. The load itself is shaped by bench/scenarios/served.py. The API key is read
from the environment variable the profile names, and never written anywhere.
"""

from __future__ import annotations

import json
import os
import time
import urllib.parse
from pathlib import Path
from typing import Any

from bench.profile.engine_specs import LlamaServerSpec, OpenAIEngineSpec
from bench.profile.workloads import Request, TokenSpace


def endpoint_hosts(base_urls: list[str]) -> list[str]:
    return [urllib.parse.urlsplit(url).hostname or "" for url in base_urls]


class OpenAIEngine:
    def __init__(self, settings: OpenAIEngineSpec, model_path: str, model_info: dict[str, Any]):
        self.settings = settings
        self.model_path = Path(model_path)
        self.endpoints = [urllib.parse.urlsplit(url) for url in settings.base_urls]
        key_env = settings.api_key_env
        self.api_key = os.environ.get(key_env) if key_env else None
        self.request_timeout_s = settings.request_timeout_s
        self.think_tags = settings.think_tags  # reasoning inside <think>...</think> in the answer's text
        if key_env and not self.api_key:
            raise RuntimeError(f"the profile names {key_env} for the API key, but it is not set")
        self.server_models: list[Any] = []
        self.tokenizer: Any = None
        self._model_config: dict[str, Any] | None = None

    @property
    def route(self) -> str:
        return "/chat/completions" if self.settings.api == "chat" else "/completions"

    def route_for(self, request: Request) -> str:
        """A conversation's turn and a structured request go to the chat route whatever `api` says."""
        return "/chat/completions" if request.messages is not None or request.options else self.route

    def address(self, index: int) -> tuple[str, int, str]:
        """(host, port, path prefix) of endpoint `index`."""
        url = self.endpoints[index % len(self.endpoints)]
        return url.hostname or "127.0.0.1", url.port or 80, url.path.rstrip("/")

    def load(self) -> dict[str, Any]:
        """Nothing to load: ask each endpoint what it serves, which also proves it is up."""
        start = time.perf_counter()
        for index in range(len(self.endpoints)):
            self.server_models.append(self._served_models(index))
        return {"load_s": time.perf_counter() - start, **self.describe()}

    def _served_models(self, index: int) -> list[Any]:
        """GET {base_url}/models within the profile's request_timeout_s; a clear error saying what failed."""
        import http.client

        host, port, prefix = self.address(index)
        url = f"{self.settings.base_urls[index].rstrip('/')}/models"
        timeout = self.settings.request_timeout_s
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
        headers = {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            connection.request("GET", f"{prefix}/models", headers=headers)
            response = connection.getresponse()
            body = response.read(16 * 2**20)
        except TimeoutError:
            raise RuntimeError(f"GET {url}: no answer within {timeout:g} s (request_timeout_s)") from None
        except (OSError, http.client.HTTPException) as exc:
            raise RuntimeError(f"GET {url} failed: {type(exc).__name__}: {exc}") from None
        finally:
            connection.close()
        if response.status != 200:
            raise RuntimeError(f"GET {url} answered HTTP {response.status}")
        try:
            listed = json.loads(body).get("data", [])
            return [m.get("id") for m in listed]
        except (ValueError, AttributeError, TypeError):
            raise RuntimeError(f"GET {url}: the answer is not an OpenAI model list") from None

    @property
    def gguf(self) -> bool:
        return self.model_path.is_file() and self.model_path.suffix == ".gguf"

    def _config(self) -> dict[str, Any]:
        """The model's config.json, or for a GGUF file (llama-server) its card's config or its header's."""
        if self._model_config is None:
            if self.gguf:
                from bench.models import resolve_model

                self._model_config = resolve_model(None, str(self.model_path), "auto", 0, None, gguf=True).config
            else:
                self._model_config = json.loads((self.model_path / "config.json").read_text())
        return self._model_config

    def _server_call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST to the first endpoint's own root (llama-server's /tokenize and /detokenize)."""
        import http.client

        host, port, _ = self.address(0)
        connection = http.client.HTTPConnection(host, port, timeout=60)
        try:
            connection.request("POST", path, json.dumps(body), {"content-type": "application/json"})
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        if response.status != 200:
            raise RuntimeError(f"{path} answered HTTP {response.status}")
        return dict(json.loads(data))

    def token_space(self) -> TokenSpace:
        config = self._config()
        special = {config.get(k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")} - {None}
        flat = {i for s in special for i in (s if isinstance(s, list) else [s])}
        return TokenSpace(int(config["vocab_size"]), frozenset(flat))

    def encode(self, text: str) -> list[int]:
        if self.gguf:  # the GGUF's own tokenizer, as the server holds it
            return [int(t) for t in self._server_call("/tokenize", {"content": text, "add_special": True})["tokens"]]
        if self.tokenizer is None:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(self.model_path, local_files_only=True)
        return list(self.tokenizer.encode(text, add_special_tokens=True))

    def payload(self, request: Request) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.settings.served_model or (self.server_models[0][0] if self.server_models and
                                                             self.server_models[0] else "default"),
            "prompt": request.prompt_token_ids,
            "max_tokens": request.output_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.settings.ignore_eos and request.structured is None:  # a structure ends when it is complete
            body.update(ignore_eos=True, min_tokens=request.output_tokens)
        if self.settings.server is not None and self.settings.server.kind == "vllm":
            body["return_token_ids"] = True  # exact token counts per chunk (a vLLM extension)
        if isinstance(self.settings.server, LlamaServerSpec):
            # llama-server: a token count in every chunk (timings_per_token), and no reuse of a slot's
            # KV cache for a prompt that shares a prefix with the last one (as prefix caching stays off).
            body.update(timings_per_token=True, cache_prompt=False)
        if request.messages is not None:  # a conversation's turn: its history and new message, as chat
            body.pop("prompt")
            body["messages"] = request.messages
        elif self.route_for(request).startswith("/chat"):  # chat takes text: the synthetic tokens, decoded
            body["messages"] = [{"role": "user", "content": self.decode(body.pop("prompt"))}]
        body.update(request.options or {})
        return body

    def decode(self, token_ids: list[int]) -> str:
        if self.gguf:
            return str(self._server_call("/detokenize", {"tokens": list(token_ids)})["content"])
        if self.tokenizer is None:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(self.model_path, local_files_only=True)
        return str(self.tokenizer.decode(token_ids, skip_special_tokens=True))

    def memory(self) -> dict[str, Any]:
        return {}  # the server's memory is the server's: see its own telemetry

    def describe(self) -> dict[str, Any]:
        return {"engine": "openai", "base_urls": self.settings.base_urls, "api": self.settings.api,
                "served_models": self.server_models, "device": "remote", "dtype": None}

    def close(self) -> None:
        pass
