"""A local OpenAI-compatible server around the `hf` engine (`pigreward serve`).

What the tests use to exercise the `sglang` client over real HTTP with tiny models, and a fallback
for users without SGLang. It speaks the subset of the API our client needs: `GET /health`,
`GET /v1/models`, `POST /v1/chat/completions` with text and base64 `data:` image parts (no URL
fetching, so no SSRF), explicit sampling, and `response_format` JSON schemas enforced by xgrammar.
Concurrent requests are batched into one `generate` by the engine.
"""

from __future__ import annotations

import base64
import binascii
import time
import uuid
from typing import Any, Literal

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from core.errors import BackendRejected, PermanentError
from workers.generation import ChatMessage, Engine, GenerationRequest, ImagePart, Sampling, TextPart
from workers.imaging import ImageLimits, normalize


class ContentPart(BaseModel):
    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: dict[str, str] | None = None


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str | list[ContentPart]


class ChatRequest(BaseModel):
    model: str
    messages: list[Message] = Field(min_length=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(512, ge=1, le=8192)
    seed: int | None = None
    response_format: dict[str, Any] | None = None


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


def create_app(
    engine: Engine, served: dict[str, Literal["judge", "reasoner"]], limits: ImageLimits
) -> FastAPI:
    """`served` maps the model names clients use to the engine role that answers them."""
    app = FastAPI(title="pigreward local OpenAI-compatible server")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        data = []
        for name, role in served.items():
            ident = engine.identity(role)
            data.append(
                {
                    "id": name,
                    "object": "model",
                    "owned_by": "pigreward",
                    "root": name,
                    "revision": ident.revision,
                }
            )
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    def chat(body: ChatRequest) -> dict[str, Any]:
        if body.model not in served:
            raise HTTPException(404, f"model {body.model!r} is not served here (served: {', '.join(served)})")
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
        request = GenerationRequest(
            messages=tuple(messages),
            sampling=Sampling(
                temperature=body.temperature, top_p=body.top_p, max_tokens=body.max_tokens, seed=body.seed
            ),
            role=served[body.model],
            json_schema=_schema(body.response_format),
        )
        try:
            [gen] = engine.generate([request])
        except BackendRejected as exc:
            raise HTTPException(400, exc.message) from exc
        usage = {
            "prompt_tokens": gen.usage.get("prompt_tokens", 0),
            "completion_tokens": gen.usage.get("completion_tokens", 0),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": gen.text},
                    "finish_reason": gen.finish_reason,
                }
            ],
            "usage": usage,
        }

    return app


def serve(
    judge: str,
    reasoner: str | None,
    host: str = "127.0.0.1",
    port: int = 30000,
    device: str = "auto",
    max_batch: int = 16,
    pixel_budget: int = 448 * 448,
) -> None:
    import uvicorn

    from workers.backends.hf import HFEngine
    from workers.backends.hf_config import HFEngineConfig

    engine = HFEngine(
        HFEngineConfig(judge_model=judge, reasoner_model=reasoner, device=device, max_batch=max_batch)
    )
    served: dict[str, Literal["judge", "reasoner"]] = {judge: "judge"}
    if reasoner and reasoner != judge:
        served[reasoner] = "reasoner"
    engine.identity("judge")  # load before accepting traffic, so /health means ready
    if reasoner:
        engine.identity("reasoner")
    app = create_app(engine, served, ImageLimits(pixel_budget=pixel_budget))
    uvicorn.run(app, host=host, port=port, log_level="warning", limit_concurrency=1024)
