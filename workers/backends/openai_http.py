"""HTTP engine for SGLang's OpenAI-compatible API (works with any OpenAI-compatible server).

SGLang batches continuously, so it starves on one-at-a-time calls: this engine is thread-safe and
keeps up to `max_in_flight` requests open per process (many Celery threads, or a chunk's fan-out,
share one engine). Every request carries every decoding parameter (`sampling_fields`). Retries follow the workers'
one HTTP policy (`workers.http`); a JSON answer that is not a chat completion comes back as a
`malformed` generation (recorded `invalid`), never a crash.

A request with `top_logprobs > 0` asks for each answer token's log-probability and that many
alternatives, spelled `"logprobs": true, "top_logprobs": N` as OpenAI, SGLang and vLLM all take it; the
answer's `choices[0].logprobs.content` (`[{token, logprob, bytes, top_logprobs: [{token, logprob,
bytes}]}]`) becomes `Generation.logprobs`. Log-probabilities that are missing or malformed leave it
None: they never cost the generation.
"""

from __future__ import annotations

import base64
import io
import json
import math
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
    Grammar,
    ImagePart,
    ModelIdentity,
    Sampling,
    TextPart,
    TokenLogprob,
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
    dialect: Literal["sglang", "vllm"] = "sglang"  # how grammars are spelled in the request body


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
        self._lengths: dict[str, int] = {}
        self._served: dict[str, str] = {}

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
            next((m for m in listed if _served_as(str(m.get("id")), model)), None)
            if model
            else (listed[0] if listed else None)
        )
        if entry is None:
            names = ", ".join(str(m.get("id")) for m in listed) or "none"
            raise BackendRejected(f"model {model!r} is not served at {url} (served: {names})")
        served = str(entry["id"])
        if revision is None:
            revision = served_revision(entry)
        # recorded without the "@REV" suffix, which is the revision; requests name the served id
        ident = ModelIdentity(served.rsplit("@", 1)[0] if "@" in served else served, revision)
        length = entry.get("max_model_len")
        with self._lock:
            self._identities[role] = ident
            self._served[role] = served
            if isinstance(length, int) and length > 0:
                self._lengths[role] = length
        return ident

    def context_length(self, role: Literal["judge", "reasoner"]) -> int | None:
        """What the server reports as `max_model_len` (SGLang and vLLM both list it), or None."""
        self.identity(role)
        with self._lock:
            return self._lengths.get(role)

    def close(self) -> None:
        self._fanout.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    # -- server facts -------------------------------------------------------------------------
    def ready(self, role: Literal["judge", "reasoner"] = "judge") -> bool:
        """SGLang answers /health with 200 once the model is loaded; others: /v1/models."""
        url = self.target(role)[0]
        return any(self._client.status(url + path) == 200 for path in ("/health", "/v1/models"))

    def chat_template(self, role: Literal["judge", "reasoner"] = "judge") -> str:
        """The server's chat template as SGLang's /get_server_info names it ("unknown" elsewhere)."""
        url = self.target(role)[0]
        try:
            info = self._client.request("GET", url + "/get_server_info")
        except (BackendRejected, BackendUnavailable):
            return "unknown"
        value = info.get("chat_template") if isinstance(info, dict) else None
        return str(value) if value else "of the checkpoint"

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
        ident = self.identity(request.role)
        with self._lock:
            model = self._served.get(request.role, ident.model_id)
        body: dict[str, Any] = {
            "model": model,
            "messages": [self._message(m) for m in request.messages],
            **sampling_fields(request.sampling),
        }
        if request.json_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "judgment", "schema": request.json_schema, "strict": True},
            }
        if request.grammar is not None:
            body.update(grammar_fields(request.grammar, self.config.dialect))
        if request.top_logprobs > 0:
            body.update(logprob_fields(request.top_logprobs))
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


def sampling_fields(s: Sampling) -> dict[str, Any]:
    """Every decoding field that can change a greedy answer, so no server default or checkpoint
    `generation_config.json` decides it. SGLang and vLLM accept all of these on chat completions."""
    fields: dict[str, Any] = {
        "temperature": s.temperature,
        "top_p": s.top_p,
        "top_k": s.top_k,
        "min_p": s.min_p,
        "repetition_penalty": s.repetition_penalty,
        "frequency_penalty": s.frequency_penalty,
        "presence_penalty": s.presence_penalty,
        "stop": list(s.stop),
        "max_tokens": s.max_tokens,
    }
    if s.seed is not None:
        fields["seed"] = s.seed
    return fields


def grammar_fields(grammar: Grammar, dialect: str) -> dict[str, Any]:
    """SGLang takes `ebnf` / `regex` at the top level; vLLM takes them under `structured_outputs`."""
    key = "grammar" if grammar.kind == "ebnf" else "regex"
    if dialect == "vllm":
        return {"structured_outputs": {key: grammar.text}}
    return {grammar.kind: grammar.text}


def logprob_fields(top_logprobs: int) -> dict[str, Any]:
    """Per-token log-probabilities and `top_logprobs` alternatives, as OpenAI's chat completions spell
    them (SGLang's and vLLM's `ChatCompletionRequest` take the same two fields)."""
    return {"logprobs": True, "top_logprobs": top_logprobs}


def parse_logprobs(value: Any) -> list[TokenLogprob] | None:
    """`choices[0].logprobs` as a list of tokens, or None when absent, null or malformed.

    The chat form is `{"content": [{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob",
    "bytes"}]}]}`; the completions form some servers answer with (`{"tokens", "token_logprobs",
    "top_logprobs": [{token: logprob}]}`) is read too. Any entry that is not a string token with a finite
    number makes the whole list None: a half-read list could put the verdict on the wrong token.
    """
    if not isinstance(value, dict):
        return None
    try:
        content = value.get("content")
        if isinstance(content, list):
            return [
                TokenLogprob(
                    token=_token(entry["token"]),
                    logprob=_logprob(entry["logprob"]),
                    top_logprobs=_alternatives(entry.get("top_logprobs")),
                )
                for entry in content
            ]
        tokens, values = value.get("tokens"), value.get("token_logprobs")
        if isinstance(tokens, list) and isinstance(values, list) and len(tokens) == len(values):
            tops = value.get("top_logprobs") or [None] * len(tokens)
            if not isinstance(tops, list) or len(tops) != len(tokens):
                return None
            return [
                TokenLogprob(token=_token(t), logprob=_logprob(v), top_logprobs=_alternatives(a))
                for t, v, a in zip(tokens, values, tops, strict=True)
            ]
    except (KeyError, TypeError, ValueError):
        return None
    return None


def _token(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("a token is not text")
    return value


def _logprob(value: Any) -> float:
    """A log-probability: a finite number, at most 0 (a little above 0 is rounding)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("a log-probability is not a number")
    number = float(value)
    if number == -math.inf:  # impossible: what OpenAI spells -9999.0
        return -9999.0
    if not math.isfinite(number) or number > 1e-3:
        raise ValueError(f"{number} is not a log-probability")
    return min(number, 0.0)


def _alternatives(value: Any) -> dict[str, float]:
    """Alternatives as OpenAI lists them (`[{token, logprob}]`) or as a `{token: logprob}` map; the most
    likely spelling wins when two decode to the same text."""
    if value is None:
        return {}
    pairs: list[tuple[str, float]]
    if isinstance(value, list):
        pairs = [(_token(a["token"]), _logprob(a["logprob"])) for a in value]
    elif isinstance(value, dict):
        pairs = [(_token(k), _logprob(v)) for k, v in value.items()]
    else:
        raise TypeError("top_logprobs is neither a list nor a map")
    out: dict[str, float] = {}
    for token, logprob in pairs:
        if token not in out or logprob > out[token]:
            out[token] = logprob
    return out


def served_revision(entry: dict[str, Any]) -> str:
    """The weights' revision: ours says it; `NAME@REV` (ops/ launch scripts); else the HF snapshot hash
    in the served path; else "unknown" (then set PIGREWARD_SGLANG_JUDGE_REVISION)."""
    if entry.get("revision"):
        return str(entry["revision"])
    served = str(entry.get("id") or "")
    if "@" in served:
        return served.rsplit("@", 1)[1]
    found = _SNAPSHOT.search(str(entry.get("root") or served))
    return found.group(1) if found else "unknown"


def _served_as(served: str, wanted: str | None) -> bool:
    """`NAME` matches a server listing `NAME` or `NAME@REV`."""
    return served == wanted or (wanted is not None and served.rsplit("@", 1)[0] == wanted)


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
        applied = answer.get("decoding")
        logprobs = parse_logprobs(choice.get("logprobs")) if isinstance(choice, dict) else None
        return Generation(
            text=text,
            finish_reason=str(choice.get("finish_reason") or "stop"),
            model=model,
            usage=usage,
            applied=applied if isinstance(applied, dict) else None,
            logprobs=logprobs,
        )
    except (KeyError, IndexError, TypeError, AttributeError):
        return Generation(text=json.dumps(answer)[:4000], finish_reason="malformed", model=model)
