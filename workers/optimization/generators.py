"""Image generators: turn (prompt, seed) into an image stored at a URI the caller chooses.

* `ProceduralGenerator` (CPU) draws a `workers.drawing` picture whose attributes follow the
  prompt's modifier phrases: a stand-in generator with a known ground truth, for tests and demos.
* `OpenAIImageGenerator` calls any OpenAI-compatible `POST /v1/images/generations` (SGLang's
  diffusion serving too) and stores the returned image.
* `ExternalGenerator` waits for images the user's own generator writes into the store.
"""

from __future__ import annotations

import base64
import binascii
import io
import random
import threading
from typing import Any, Protocol, runtime_checkable

from core.errors import (
    BackendRejected,
    ImageNotFound,
    ImageNotReady,
    ImageUnreadable,
    InvalidRequest,
)
from workers.drawing import ATTRIBUTES, DrawParams, draw_image
from workers.http import JSONClient, RetryPolicy
from workers.imaging import ImageLimits, normalize
from workers.optimization.modifiers import parse_modifiers
from workers.store import ImageStore

TARGET_NOISE = 0.05
"""Half-width of the seeded noise added to an attribute a modifier phrase sets."""


@runtime_checkable
class ImageGenerator(Protocol):
    name: str

    def generate(self, prompt: str, seed: int, uri: str) -> str:
        """Produce the image for (prompt, seed) AT `uri` (the caller chooses it) and return `uri`."""
        ...


# ------------------------------------------------------------------------------------ procedural


def draw_params(prompt: str, seed: int) -> DrawParams:
    """The drawing parameters for (prompt, seed).

    Every attribute is drawn uniformly from `random.Random(seed)`, then one noise value per attribute
    (always drawn, so the same seed gives the same layout and untouched attributes whatever the
    phrases); attributes named by `parse_modifiers(prompt)` become target + noise in [-0.05, 0.05],
    clipped to [0, 1]. The layout seed is `seed`, which must be >= 0.
    """
    if seed < 0:
        raise InvalidRequest(f"generator seed must be >= 0, got {seed}")
    rng = random.Random(seed)
    values = {a: rng.random() for a in ATTRIBUTES}
    noise = {a: rng.uniform(-TARGET_NOISE, TARGET_NOISE) for a in ATTRIBUTES}
    for attribute, target in parse_modifiers(prompt).items():
        values[attribute] = min(1.0, max(0.0, target + noise[attribute]))
    return DrawParams(seed=seed, **values)


def render_png(prompt: str, seed: int, size: int = 256) -> bytes:
    """PNG bytes of the procedural image for (prompt, seed): identical inputs give identical bytes."""
    buf = io.BytesIO()
    draw_image(draw_params(prompt, seed), size).save(buf, format="PNG")
    return buf.getvalue()


class ProceduralGenerator:
    """Draws the prompt's attributes (`draw_params`) as a size x size PNG and writes it with `store.put`."""

    name = "procedural"

    def __init__(self, store: ImageStore, size: int = 256) -> None:
        if size < 16:
            raise ValueError(f"size must be >= 16, got {size}")
        self.store = store
        self.size = size

    def generate(self, prompt: str, seed: int, uri: str) -> str:
        return self.store.put(uri, render_png(prompt, seed, self.size))


# ------------------------------------------------------------------------------ OpenAI-compatible


def _endpoint(url: str) -> tuple[str, str]:
    """(base URL, generations URL) from a server URL, a .../v1 URL or the full endpoint."""
    url = url.rstrip("/")
    for suffix in ("/v1/images/generations", "/v1"):
        if url.endswith(suffix):
            url = url[: -len(suffix)]
            break
    return url, url + "/v1/images/generations"


class OpenAIImageGenerator:
    """`POST /v1/images/generations` with `{"model", "prompt", "n": 1, "size", "response_format":
    "b64_json", "seed"}`; `data[0].b64_json` is decoded, checked to be an image (`normalize`, so a
    non-image is `ImageUnreadable`, a `PermanentError`) and stored with `store.put(uri, bytes)`.

    `model=None` uses the first model `GET /v1/models` lists, and leaves "model" out of the body when
    the server has no such listing (404). Requests follow the workers' one HTTP retry policy
    (`workers.http`: `max_attempts` tries in all, then `BackendUnavailable`; other 4xx
    `BackendRejected`); an answer without `b64_json` is `BackendRejected` too (this class never
    fetches image URLs a server returns). Thread-safe.
    """

    name = "openai"

    def __init__(
        self,
        url: str,
        store: ImageStore,
        model: str | None = None,
        size: str = "512x512",
        api_key: str | None = None,
        timeout_s: float = 300,
        max_attempts: int = 3,
        backoff_s: float = 0.5,
        backoff_max_s: float = 10.0,
        limits: ImageLimits | None = None,
    ) -> None:
        self.base_url, self.endpoint = _endpoint(url)
        self.store = store
        self.model = model
        self.size = size
        self.limits = limits or ImageLimits()
        self._client = JSONClient(
            policy=RetryPolicy(max_attempts, backoff_s, backoff_max_s),
            timeout_s=timeout_s,
            connect_timeout_s=min(10.0, timeout_s),
            api_key=api_key,
        )
        self._lock = threading.Lock()
        self._resolved = model is not None

    def generate(self, prompt: str, seed: int, uri: str) -> str:
        body: dict[str, Any] = {
            "prompt": prompt,
            "n": 1,
            "size": self.size,
            "response_format": "b64_json",
            "seed": seed,
        }
        model = self._model()
        if model is not None:
            body = {"model": model, **body}
        answer = self._client.request("POST", self.endpoint, body)
        try:
            encoded = answer["data"][0]["b64_json"]
            if not isinstance(encoded, str) or not encoded:
                raise TypeError("b64_json is not a non-empty string")
        except (KeyError, IndexError, TypeError) as exc:
            raise BackendRejected(
                f"{self.endpoint} answered without data[0].b64_json: {str(answer)[:300]}"
            ) from exc
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ImageUnreadable(f"{self.endpoint} returned b64_json that is not base64: {exc}") from exc
        normalize(data, uri, self.limits)  # raises ImageUnreadable / ImageTooLarge for non-images
        return self.store.put(uri, data)

    def close(self) -> None:
        self._client.close()

    def _model(self) -> str | None:
        with self._lock:
            if self._resolved:
                return self.model
        try:
            listed = self._client.request("GET", self.base_url + "/v1/models")
        except BackendRejected:  # no model listing on this server: send no model name
            listed = None
        data = listed.get("data") if isinstance(listed, dict) else None
        model = str(data[0]["id"]) if isinstance(data, list) and data and isinstance(data[0], dict) else None
        with self._lock:
            self.model, self._resolved = model, True
            return self.model


# -------------------------------------------------------------------------------------- external


class ExternalGenerator:
    """Images come from the user's own generator, written straight into the store.

    `generate` returns `uri` once something can be read there, and raises `ImageNotReady` (a
    `TransientError`, so callers retry with backoff) while it is missing. Other store errors
    (forbidden location, too large, store down) propagate unchanged.
    """

    name = "external"

    def __init__(self, store: ImageStore) -> None:
        self.store = store

    def generate(self, prompt: str, seed: int, uri: str) -> str:
        try:
            self.store.read(uri)
        except ImageNotFound as exc:
            raise ImageNotReady(
                f"no image at {uri!r} yet for prompt {prompt[:80]!r} (seed {seed}): "
                "the external generator has not written it"
            ) from exc
        return uri
