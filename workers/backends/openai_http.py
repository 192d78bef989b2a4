"""HTTP engine for SGLang's OpenAI-compatible API (works with any OpenAI-compatible server).

SGLang batches continuously, so it starves on one-at-a-time calls: this engine is thread-safe and
keeps up to `max_in_flight` requests open per process (many Celery threads, or a chunk's fan-out,
share one engine). Every request carries explicit sampling parameters. Retries follow the workers'
one HTTP policy (`workers.http`); a JSON answer that is not a chat completion comes back as a
`malformed` generation (recorded `invalid`), never a crash.
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from core.errors import BackendRejected, BackendUnavailable
from workers.generation import (
    ChatMessage,
    Generation,
    GenerationRequest,
    ImagePart,
    ModelIdentity,
    TextPart,
)
from workers.http import JSONClient, RetryPolicy
from workers.imaging import NormalizedImage

_SNAPSHOT = re.compile(r"snapshots/([0-9a-f]{7,40})")


@dataclass(frozen=True)
class HTTPEngineConfig:
    """Where the models are served and how hard to push them. Units: seconds."""

    judge_url: str
    judge_model: str | None = None  # None: the first model the server lists
    judge_revision: str | None = None  # None: from the served path (HF snapshot hash) or "unknown"
    reasoner_url: str | None = None  # None: the judge's server
    reasoner_model: str | None = None
    reasoner_revision: str | None = None
    api_key: str | None = None
    max_in_flight: int = 64
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 300.0
    max_attempts: int = 4
    backoff_s: float = 0.5
    backoff_max_s: float = 10.0


class OpenAIHTTPEngine:
    """A thread-safe client with bounded concurrency, retries and image encoding cached by content."""

    def __init__(self, config: HTTPEngineConfig) -> None:
        self.config = config
        self._client = JSONClient(
            policy=RetryPolicy(config.max_attempts, config.backoff_s, config.backoff_max_s),
            timeout_s=config.read_timeout_s,
            connect_timeout_s=config.connect_timeout_s,
            api_key=config.api_key,
            max_in_flight=config.max_in_flight,
        )
        self._fanout = ThreadPoolExecutor(max_workers=config.max_in_flight, thread_name_prefix="http-engine")
        self._images: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()
        self._identities: dict[str, ModelIdentity] = {}

    # -- the Engine protocol ------------------------------------------------------------------
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        if len(requests) == 1:
            return [self._complete(requests[0])]
        return list(self._fanout.map(self._complete, requests))

    def identity(self, role: Literal["judge", "reasoner"]) -> ModelIdentity:
        with self._lock:
            if role in self._identities:
                return self._identities[role]
        url, model, revision = self.target(role)
        listed = self.models(url)
        entry = (
            next((m for m in listed if m.get("id") == model), None)
            if model
            else (listed[0] if listed else None)
        )
        if entry is None:
            names = ", ".join(str(m.get("id")) for m in listed) or "none"
            raise BackendRejected(f"model {model!r} is not served at {url} (served: {names})")
        if revision is None:  # ours says it; SGLang/vLLM give the served path (an HF snapshot hash)
            found = _SNAPSHOT.search(str(entry.get("root") or entry.get("id") or ""))
            revision = str(entry.get("revision") or (found.group(1) if found else "unknown"))
        ident = ModelIdentity(str(entry["id"]), revision)
        with self._lock:
            self._identities[role] = ident
        return ident

    def close(self) -> None:
        self._fanout.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    # -- server facts -------------------------------------------------------------------------
    def ready(self, role: Literal["judge", "reasoner"] = "judge") -> bool:
        """SGLang answers /health with 200 once the model is loaded; others: /v1/models."""
        url = self.target(role)[0]
        return any(self._client.status(url + path) == 200 for path in ("/health", "/v1/models"))

    def models(self, url: str) -> list[dict[str, Any]]:
        body = self._client.request("GET", url + "/v1/models")
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise BackendUnavailable(f"{url}/v1/models did not list models")
        return data

    # -- internals ----------------------------------------------------------------------------
    def target(self, role: str) -> tuple[str, str | None, str | None]:
        """(base URL, model name or None, revision or None) of the judge or the reasoner."""
        c = self.config
        if role != "reasoner":
            return c.judge_url.rstrip("/"), c.judge_model, c.judge_revision
        url = (c.reasoner_url or c.judge_url).rstrip("/")
        model = c.reasoner_model or c.judge_model
        same = url == c.judge_url.rstrip("/") and model == c.judge_model
        return url, model, c.reasoner_revision or (c.judge_revision if same else None)

    def _complete(self, request: GenerationRequest) -> Generation:
        url = self.target(request.role)[0]
        model = self.identity(request.role).model_id
        s = request.sampling
        body: dict[str, Any] = {
            "model": model,
            "messages": [self._message(m) for m in request.messages],
            "temperature": s.temperature,
            "top_p": s.top_p,
            "max_tokens": s.max_tokens,
        }
        if s.seed is not None:
            body["seed"] = s.seed
        if request.json_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "judgment", "schema": request.json_schema, "strict": True},
            }
        answer = self._client.request("POST", url + "/v1/chat/completions", body)
        return _generation(answer, model)

    def _message(self, message: ChatMessage) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        for part in message.parts:
            if isinstance(part, TextPart):
                content.append({"type": "text", "text": part.text})
            elif isinstance(part, ImagePart):
                content.append({"type": "image_url", "image_url": {"url": self._data_url(part.image)}})
        if all(c["type"] == "text" for c in content):
            return {"role": message.role, "content": "".join(c["text"] for c in content)}
        return {"role": message.role, "content": content}

    def _data_url(self, image: NormalizedImage) -> str:
        """PNG bytes are deterministic for the same pixels: the same image always sends the same bytes."""
        with self._lock:
            hit = self._images.get(image.sha256)
            if hit is not None:
                self._images.move_to_end(image.sha256)
                return hit
        buf = io.BytesIO()
        image.image.save(buf, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        with self._lock:
            self._images[image.sha256] = url
            while len(self._images) > 256:
                self._images.popitem(last=False)
        return url


def _generation(answer: Any, model: str) -> Generation:
    try:
        choice = answer["choices"][0]
        text = choice["message"]["content"]
        if not isinstance(text, str):
            raise TypeError("content is not text")
        usage_in = answer.get("usage") or {}
        usage = {k: int(v) for k, v in usage_in.items() if isinstance(v, int)}
        cached = (usage_in.get("prompt_tokens_details") or {}).get("cached_tokens")
        if isinstance(cached, int):
            usage["cached_tokens"] = cached
        return Generation(
            text=text, finish_reason=str(choice.get("finish_reason") or "stop"), model=model, usage=usage
        )
    except (KeyError, IndexError, TypeError, AttributeError):
        return Generation(text=json.dumps(answer)[:4000], finish_reason="malformed", model=model)
