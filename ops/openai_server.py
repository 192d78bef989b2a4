"""A local OpenAI-compatible server around the `hf` engine (`pigreward serve`).

What the tests use to exercise the `sglang` client over real HTTP with tiny models, and a fallback
for users without SGLang. It speaks the subset of the API our client needs, as SGLang does:
`GET /health`, `GET /v1/models` (with `max_model_len`), `GET /get_server_info` (the chat template),
`POST /v1/chat/completions` with text and base64 `data:` image parts (no URL fetching, so no SSRF),
every sampling field SGLang takes (penalties, `top_k`, `min_p`, `stop`), `response_format` JSON
schemas and SGLang's `ebnf` / `regex` grammars enforced by xgrammar. A prompt that does not fit the
context length is refused with a 400 before it runs, and `prompt_tokens_details.cached_tokens` is
reported only with `--enable-cache-report`, both as SGLang does. Unlike SGLang, each answer echoes the
decoding parameters it applied (`decoding`), which `pigreward check` shows. Concurrent requests are
batched into one `generate` by the engine.

`"logprobs": true` (with `"top_logprobs": N`, at most 20) returns `choices[0].logprobs.content`, one
`{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}` per answer token, as SGLang and vLLM
do; `bytes` are the UTF-8 bytes of the token's text as decoded on its own. A server started with
`ServerOptions(logprobs=False)` answers `"logprobs": null` whatever is asked, like a server that does
not support them.
"""

from __future__ import annotations

import base64
import binascii
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI, HTTPException
from jinja2 import TemplateError
from pydantic import BaseModel, Field

from core.errors import BackendRejected, PermanentError
from workers.generation import (
    ChatMessage,
    Engine,
    GenerationRequest,
    Grammar,
    ImagePart,
    Sampling,
    TextPart,
    TokenLogprob,
)
from workers.imaging import ImageLimits, normalize


class ContentPart(BaseModel):
    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: dict[str, str] | None = None


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str | list[ContentPart]


class ChatRequest(BaseModel):
    """The fields SGLang's chat completions take that can change an answer; defaults are OpenAI's."""

    model: str
    messages: list[Message] = Field(min_length=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(-1, ge=-1)
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, gt=0.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    stop: str | list[str] | None = None
    max_tokens: int = Field(512, ge=1, le=8192)
    seed: int | None = None
    response_format: dict[str, Any] | None = None
    ebnf: str | None = None
    regex: str | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)

    def sampling(self) -> Sampling:
        stop = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        return Sampling(
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            repetition_penalty=self.repetition_penalty,
            frequency_penalty=self.frequency_penalty,
            presence_penalty=self.presence_penalty,
            stop=tuple(stop),
            max_tokens=self.max_tokens,
            seed=self.seed,
        )

    def alternatives(self) -> int | None:
        """How many alternatives per token were asked for, or None when no log-probabilities were."""
        if not self.logprobs:
            if self.top_logprobs:
                raise HTTPException(400, "when using `top_logprobs`, `logprobs` must be set to true")
            return None
        return self.top_logprobs or 0

    def grammar(self) -> Grammar | None:
        if self.ebnf is not None and self.regex is not None:
            raise HTTPException(400, "send one of ebnf and regex, not both")
        if self.ebnf is not None:
            return Grammar("ebnf", self.ebnf)
        return Grammar("regex", self.regex) if self.regex is not None else None


def _schema(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    if not response_format or response_format.get("type") == "text":
        return None
    if response_format.get("type") == "json_object":
        return {"type": "object"}
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if isinstance(schema, dict):
            return schema
    raise HTTPException(400, "response_format must be text, json_object or json_schema with a schema")


def _image(url: str, limits: ImageLimits) -> ImagePart:
    if not url.startswith("data:") or ";base64," not in url:
        raise HTTPException(400, "only base64 data: image URLs are accepted")
    try:
        data = base64.b64decode(url.split(";base64,", 1)[1], validate=True)
        return ImagePart(normalize(data, "data-url", limits))
    except (binascii.Error, ValueError) as exc:
        raise HTTPException(400, f"image is not valid base64: {exc}") from exc
    except PermanentError as exc:
        raise HTTPException(400, f"image rejected: {exc.message}") from exc


@dataclass(frozen=True)
class ServerOptions:
    """What `pigreward serve` was started with (SGLang's flags of the same meaning)."""

    context_length: int | None = None  # None: the model's max_position_embeddings
    enable_cache_report: bool = False
    chat_template_file: str | None = None  # None: the checkpoint's own template
    logprobs: bool = True  # False: answer `"logprobs": null` even when asked (a server without them)

    @property
    def chat_template(self) -> str:
        """How errors and /get_server_info name the template in use."""
        return repr(self.chat_template_file) if self.chat_template_file else "of the checkpoint"


def create_app(
    engine: Engine,
    served: dict[str, Literal["judge", "reasoner"]],
    limits: ImageLimits,
    options: ServerOptions | None = None,
) -> FastAPI:
    """`served` maps the model names clients use to the engine role that answers them."""
    opts = options or ServerOptions()
    app = FastAPI(title="pigreward local OpenAI-compatible server")

    def context_length(role: Literal["judge", "reasoner"]) -> int | None:
        return opts.context_length or engine.context_length(role)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/get_server_info")
    def server_info() -> dict[str, Any]:
        return {
            "chat_template": opts.chat_template,
            "context_length": opts.context_length,
            "enable_cache_report": opts.enable_cache_report,
        }

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        data = []
        for name, role in served.items():
            ident = engine.identity(role)
            entry: dict[str, Any] = {
                "id": name,
                "object": "model",
                "owned_by": "pigreward",
                "root": name,
                "revision": ident.revision,
            }
            length = context_length(role)
            if length:
                entry["max_model_len"] = length
            data.append(entry)
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    def chat(body: ChatRequest) -> dict[str, Any]:
        if body.model not in served:
            raise HTTPException(404, f"model {body.model!r} is not served here (served: {', '.join(served)})")
        role = served[body.model]
        messages = []
        for m in body.messages:
            raw = [ContentPart(type="text", text=m.content)] if isinstance(m.content, str) else m.content
            parts: list[TextPart | ImagePart] = []
            for p in raw:
                if p.type == "text":
                    parts.append(TextPart(p.text or ""))
                else:
                    parts.append(_image((p.image_url or {}).get("url", ""), limits))
            messages.append(ChatMessage(m.role, tuple(parts)))
        asked = body.alternatives() if opts.logprobs else None
        request = GenerationRequest(
            messages=tuple(messages),
            sampling=body.sampling(),
            role=role,
            json_schema=_schema(body.response_format),
            grammar=body.grammar(),
            top_logprobs=0 if asked is None else max(1, asked),  # the engine asks with > 0
        )
        length = context_length(role)
        try:
            count = getattr(engine, "tokens", None)
            if length and callable(count):
                prompt_tokens = int(count(role, request))
                if prompt_tokens + body.max_tokens > length:
                    raise HTTPException(
                        400,
                        f"Requested token count exceeds the model's maximum context length of {length} "
                        f"tokens. You requested a total of {prompt_tokens + body.max_tokens} tokens: "
                        f"{prompt_tokens} tokens from the input messages and {body.max_tokens} tokens "
                        "for the completion.",
                    )
            [gen] = engine.generate([request])
        except BackendRejected as exc:
            raise HTTPException(400, exc.message) from exc
        except TemplateError as exc:  # the chat template refused these messages (e.g. image parts)
            raise HTTPException(400, f"chat template {opts.chat_template}: {exc}") from exc
        usage: dict[str, Any] = {
            "prompt_tokens": gen.usage.get("prompt_tokens", 0),
            "completion_tokens": gen.usage.get("completion_tokens", 0),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if opts.enable_cache_report:
            usage["prompt_tokens_details"] = {"cached_tokens": gen.usage.get("cached_tokens", 0)}
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": gen.text},
                    "logprobs": _logprobs(gen.logprobs, asked),
                    "finish_reason": gen.finish_reason,
                }
            ],
            "usage": usage,
            "decoding": request.sampling.record(request.grammar),
        }

    return app


def _logprobs(tokens: list[TokenLogprob] | None, alternatives: int | None) -> dict[str, Any] | None:
    """`choices[0].logprobs` as OpenAI's chat completions spell it, or None when not asked for."""
    if alternatives is None or tokens is None:
        return None

    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": _finite(logprob), "bytes": list(token.encode("utf-8"))}

    return {
        "content": [
            {
                **entry(t.token, t.logprob),
                "top_logprobs": [
                    entry(k, v)
                    for k, v in sorted(t.top_logprobs.items(), key=lambda kv: -kv[1])[:alternatives]
                ],
            }
            for t in tokens
        ]
    }


def _finite(logprob: float) -> float:
    """JSON has no -inf: an impossible token is -9999.0, as OpenAI reports it."""
    return logprob if math.isfinite(logprob) else -9999.0


def serve(
    judge: str,
    reasoner: str | None,
    host: str = "127.0.0.1",
    port: int = 30000,
    device: str = "auto",
    max_batch: int = 16,
    pixel_budget: int = 448 * 448,
    options: ServerOptions | None = None,
) -> None:
    import uvicorn

    from workers.backends.hf import HFEngine
    from workers.backends.hf_config import HFEngineConfig

    opts = options or ServerOptions()
    engine = HFEngine(
        HFEngineConfig(
            judge_model=judge,
            reasoner_model=reasoner,
            device=device,
            max_batch=max_batch,
            chat_template=opts.chat_template_file,
        )
    )
    served: dict[str, Literal["judge", "reasoner"]] = {judge: "judge"}
    if reasoner and reasoner != judge:
        served[reasoner] = "reasoner"
    engine.identity("judge")  # load before accepting traffic, so /health means ready
    if reasoner:
        engine.identity("reasoner")
    app = create_app(engine, served, ImageLimits(pixel_budget=pixel_budget), opts)
    uvicorn.run(app, host=host, port=port, log_level="warning", limit_concurrency=1024)
