"""The per-process resources tasks hand to workers/: built once from settings, on first use.

Celery creates one task object per process; a model client, an S3 client or a DB pool is made
lazily here and reused, never at import time (so forking pools and the CLI stay cheap).
"""

from __future__ import annotations

import threading
from dataclasses import replace

from celery.signals import worker_process_init

from models.db import make_engine
from pigreward.settings import Settings, get_settings
from tasks import metrics
from workers.backends import Backend, BackendConfig, create_backend
from workers.backends.openai_http import HTTPEngineConfig
from workers.generation import Sampling
from workers.imaging import ImageLimits, ImageLoader
from workers.pipeline import Resources
from workers.store import ImageStore, StoreConfig

_lock = threading.Lock()
_resources: Resources | None = None
_backends: dict[str, Backend] = {}  # by 'name/protocol'


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
    )


def backend_config(settings: Settings) -> BackendConfig:
    from workers.backends.hf_config import HFEngineConfig

    sampling = {"temperature": settings.temperature, "top_p": settings.top_p, "seed": settings.seed}
    key = settings.sglang_api_key
    return BackendConfig(
        protocol=settings.protocol,
        template_dir=settings.template_dir,
        judge_sampling=Sampling(max_tokens=settings.judge_max_tokens, **sampling),
        reasoner_sampling=Sampling(max_tokens=settings.reasoner_max_tokens, **sampling),
        http=HTTPEngineConfig(
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
        ),
        hf=HFEngineConfig(
            judge_model=settings.hf_judge_model,
            reasoner_model=settings.hf_reasoner_model,
            revision=settings.hf_revision,
            device=settings.hf_device,
            dtype=settings.hf_dtype,
            max_batch=settings.hf_max_batch,
        ),
    )


def backend_for(name: str, protocol: str | None = None) -> Backend:
    """One instance of each (backend, protocol) per process, configured from settings."""
    key = f"{name}/{protocol or ''}"
    with _lock:
        if key not in _backends:
            config = backend_config(get_settings())
            if protocol:
                config = replace(config, protocol=protocol)
            _backends[key] = create_backend(name, config)
        return _backends[key]


def build_resources(settings: Settings) -> Resources:
    store = ImageStore(store_config(settings))
    limits = ImageLimits(max_pixels=settings.max_image_pixels, pixel_budget=settings.pixel_budget)
    return Resources(
        engine=make_engine(settings.resolved_database_url),
        loader=ImageLoader(
            store,
            limits,
            cache_bytes=settings.image_cache_mb * 1024 * 1024,
            uri_ttl_s=settings.image_uri_ttl_s,
        ),
        backend_for=backend_for,
        lease_s=settings.visibility_timeout_s,
        max_attempts=settings.max_attempts,
        events=metrics.OBSERVER,
    )


def get_resources() -> Resources:
    global _resources
    with _lock:
        if _resources is None:
            _resources = build_resources(get_settings())
        return _resources


@worker_process_init.connect
def _fresh_after_fork(**_: object) -> None:
    """A forked pool child must not share the parent's database sockets."""
    reset_resources(close=False)


def reset_resources(close: bool = True) -> None:
    """Drop everything (tests and CLI commands that change settings; forked children)."""
    global _resources
    with _lock:
        if _resources is not None:
            _resources.engine.dispose(close=close)
        _resources = None
        for backend in _backends.values():
            backend.close()
        _backends.clear()
