"""Settings turned into the frozen config objects workers/ takes: read once here, passed down.

workers/ never reads settings; the entry points (worker processes through `tasks.runtime`, the API,
the CLI) build what they need with these functions.
"""

from __future__ import annotations

from dataclasses import replace

from core.settings import Settings
from workers.backends import BackendConfig
from workers.backends.hf_config import HFEngineConfig
from workers.backends.openai_http import HTTPEngineConfig, OpenAIHTTPEngine
from workers.decoded import DecodedFolder
from workers.generation import Sampling
from workers.imaging import ImageLimits, ImageLoader
from workers.optimization.generators import (
    ExternalGenerator,
    ImageGenerator,
    OpenAIImageGenerator,
    ProceduralGenerator,
)
from workers.optimization.rewriters import LLMRewriter, ModifierRewriter, Rewriter
from workers.store import ImageStore, StoreConfig


def store_config(settings: Settings) -> StoreConfig:
    secret = settings.s3_secret_access_key
    return StoreConfig(
        image_root=settings.resolved_image_root,
        max_bytes=settings.max_image_bytes,
        s3_endpoint_url=settings.s3_endpoint_url,
        s3_region=settings.s3_region,
        s3_access_key_id=settings.s3_access_key_id,
        s3_secret_access_key=secret.get_secret_value() if secret else None,
        allowed_buckets=tuple(settings.s3_allowed_buckets),
        # every thread of every chunk may read at once; fewer pooled connections means reconnects
        max_connections=max(10, min(512, settings.worker_concurrency * settings.chunk_concurrency)),
    )


def image_limits(settings: Settings) -> ImageLimits:
    return ImageLimits(
        max_pixels=settings.max_image_pixels,
        pixel_budget=settings.pixel_budget,
        decode_budget=settings.decode_budget_pixels,
    )


def image_loader(settings: Settings) -> ImageLoader:
    """A store plus normalization with the configured limits and decoded-image cache."""
    return ImageLoader(
        ImageStore(store_config(settings)),
        image_limits(settings),
        cache_bytes=settings.image_cache_mb * 1024 * 1024,
        uri_ttl_s=settings.image_uri_ttl_s,
        shared=decoded_folder(settings),
    )


def decoded_folder(settings: Settings) -> DecodedFolder | None:
    """The host's folder of normalized pictures, or None when `decoded_cache_mb` is 0."""
    if settings.decoded_cache_mb <= 0:
        return None
    return DecodedFolder(
        settings.data_dir / "decoded",
        max_bytes=settings.decoded_cache_mb * 1024 * 1024,
        pixel_budget=settings.pixel_budget,
    )


def http_engine_config(settings: Settings) -> HTTPEngineConfig:
    key = settings.sglang_api_key
    return HTTPEngineConfig(
        judge_url=settings.sglang_url,
        judge_model=settings.sglang_judge_model,
        judge_revision=settings.sglang_judge_revision,
        reasoner_url=settings.sglang_reasoner_url,
        reasoner_model=settings.sglang_reasoner_model,
        reasoner_revision=settings.sglang_reasoner_revision,
        api_key=key.get_secret_value() if key else None,
        max_in_flight=settings.sglang_max_in_flight,
        read_timeout_s=settings.sglang_timeout_s,
        max_attempts=settings.sglang_max_attempts,
        dialect=settings.sglang_server,
    )


def backend_config(settings: Settings, protocol: str | None = None) -> BackendConfig:
    """Everything a backend needs; `protocol` overrides the configured one (a per-call option)."""

    def sampling(max_tokens: int) -> Sampling:
        return Sampling(
            max_tokens=max_tokens,
            temperature=settings.temperature,
            top_p=settings.top_p,
            top_k=settings.top_k,
            min_p=settings.min_p,
            repetition_penalty=settings.repetition_penalty,
            frequency_penalty=settings.frequency_penalty,
            presence_penalty=settings.presence_penalty,
            stop=tuple(settings.stop),
            seed=settings.seed,
        )

    config = BackendConfig(
        protocol=settings.protocol,
        template_dir=settings.template_dir,
        judge_sampling=sampling(settings.judge_max_tokens),
        reasoner_sampling=sampling(settings.reasoner_max_tokens),
        judge_top_logprobs=settings.judge_top_logprobs,
        grammar=settings.grammar,
        context_length=settings.context_length,
        tokenizer=settings.tokenizer or settings.hf_judge_model,
        chat_template=settings.chat_template,
        http=http_engine_config(settings),
        hf=HFEngineConfig(
            judge_model=settings.hf_judge_model,
            reasoner_model=settings.hf_reasoner_model,
            revision=settings.hf_revision,
            device=settings.hf_device,
            dtype=settings.hf_dtype,
            max_batch=settings.hf_max_batch,
            chat_template=str(settings.chat_template) if settings.chat_template else None,
        ),
    )
    return replace(config, protocol=protocol) if protocol else config


def rewriter(settings: Settings) -> Rewriter:
    if settings.optimize_rewriter == "llm":
        http = replace(
            http_engine_config(settings),
            judge_url=settings.optimize_llm_url or settings.sglang_url,
            judge_model=settings.optimize_llm_model,
        )
        return LLMRewriter(OpenAIHTTPEngine(http))
    if settings.optimize_rewriter != "modifier":
        raise ValueError(f"unknown rewriter {settings.optimize_rewriter!r}: modifier or llm")
    return ModifierRewriter()


def image_generator(settings: Settings, store: ImageStore) -> ImageGenerator:
    if settings.optimize_generator == "openai":
        if not settings.optimize_image_url:
            raise ValueError("PIGREWARD_OPTIMIZE_IMAGE_URL is needed for the openai image generator")
        return OpenAIImageGenerator(settings.optimize_image_url, store, model=settings.optimize_image_model)
    if settings.optimize_generator == "external":
        return ExternalGenerator(store)
    if settings.optimize_generator != "procedural":
        raise ValueError(f"unknown generator {settings.optimize_generator!r}: procedural, openai or external")
    return ProceduralGenerator(store)
