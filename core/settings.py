"""Configuration: one `BaseSettings` class, env prefix ``PIGREWARD_``.

Defaults are the embedded set-up (SQLite file, local image folder, kombu in-memory broker with an
in-process worker, the `lite` backend), so `pigreward demo` runs on a bare machine. Production sets
the broker (Redis), the database (Postgres), the image store (S3) and the backend. Only entry points
(CLI, Celery app, API) read settings; everything below them receives plain values.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, computed_field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    """One place per user, not per current directory: a command run from another folder must find
    the same database and images (and never read images relative to wherever it was started)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "pigreward"


class Settings(BaseSettings):
    """Every knob, with the embedded default and the production meaning in its description."""

    model_config = SettingsConfigDict(env_prefix="PIGREWARD_", env_file=".env", extra="ignore")

    data_dir: Path = Field(
        default_factory=lambda: default_data_dir(),
        description="Where the embedded SQLite file, images and caches live. Default: "
        "$XDG_DATA_HOME/pigreward (~/.local/share/pigreward), whatever the current directory.",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL. Default: SQLite file in data_dir. "
        "Production: postgresql+psycopg://user:pass@host:5432/db",
    )
    broker_url: str = Field(
        "memory://localhost/",
        description="Celery broker. memory:// means an in-process worker (embedded default). "
        "Production: redis://host:6379/0",
    )
    result_backend: str = Field(
        "cache+memory://", description="Celery results. Production: redis://host:6379/1"
    )
    image_root: Path | None = Field(
        None, description="Root that file:// image URIs are confined to. Default: data_dir/images."
    )
    s3_endpoint_url: str | None = Field(None, description="S3 endpoint (SeaweedFS, MinIO, ...); None = AWS.")
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_allowed_buckets: list[str] = Field(
        default_factory=list, description="If set, only these buckets may be read (empty = any)."
    )
    max_image_bytes: int = Field(32 * 1024 * 1024, description="Refuse image files larger than this.")
    max_image_pixels: int = Field(
        50_000_000, description="Refuse images whose header declares more pixels (decompression bombs)."
    )
    decode_budget_pixels: int = Field(
        100_000_000,
        ge=1,
        description="Pixels one process decodes at once (threads wait their turn): bounds a worker's "
        "memory under hostile images at most at this x 8 bytes above idle.",
    )
    pixel_budget: int = Field(
        448 * 448, description="Images are resized to at most this many pixels (Qwen2-VL: 448x448)."
    )
    image_cache_mb: int = Field(
        1024, ge=0, description="Decoded images kept per worker process (448x448 RGB: ~0.8 MB each)."
    )
    decoded_cache_mb: int = Field(
        2048,
        ge=0,
        description="Normalized pictures shared by a host's worker processes, in data_dir/decoded "
        "(448x448: ~0.6 MB each; 0: off, each process decodes every picture itself).",
    )
    image_uri_ttl_s: float = Field(
        0.0,
        ge=0,
        description="Trust a URI read this recently without reading it again (0: always read). "
        "Only for write-once keys: an overwritten key is judged from its old content until then.",
    )
    backend: str = Field(
        "lite", description="Default judge backend: lite (CPU), sglang (HTTP), hf (in-process)."
    )
    protocol: str = Field(
        "pigreward-v1",
        description="LVLM protocol: pigreward-v1 (released checkpoints) or json-v1 (instruct VLMs).",
    )
    template_dir: Path | None = Field(
        None, description="A folder of edited templates (<dir>/<protocol>/{judge,reasoner}.txt)."
    )
    swap: bool | None = Field(
        None, description="Judge both orders by default (None: on for LVLM backends, off for lite)."
    )
    context_quality: bool | None = Field(
        None,
        description="Check each new context on the user's own references, each held out in turn (one "
        "judgment per reference, two with both orders): its leave-one-out accuracy, shown with the context "
        "and used by calibrated confidence. None: on for lite, off for LVLM backends.",
    )
    calibration_refresh_s: float = Field(
        60.0, gt=0, description="Workers look for a newer calibration of their judge this often."
    )
    judge_max_tokens: int = Field(512, description="Token limit of one judge answer.")
    judge_top_logprobs: int = Field(
        5,
        ge=0,
        le=20,
        description="Ask the judge server for the log-probabilities of each answer token and this many "
        "alternatives (OpenAI `logprobs`/`top_logprobs`); the verdict token's feed the verdict confidence. "
        "0: do not ask (confidence then comes from the score margin).",
    )
    reasoner_max_tokens: int = Field(256, description="Token limit of one rationale.")
    temperature: float = Field(0.0, description="Sampling temperature (0 = greedy, repeatable).")
    top_p: float = 1.0
    top_k: int = Field(-1, description="Top-k cut; -1 = off.")
    min_p: float = 0.0
    repetition_penalty: float = Field(
        1.05, description="Sent on every request (1.05: Qwen2-VL's released generation_config value)."
    )
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    stop: list[str] = Field(default_factory=list, description="Stop strings sent with every request.")
    seed: int | None = 0
    grammar: Literal["off", "ebnf", "regex"] = Field(
        "off",
        description="pigreward-v1 loop control: off, ebnf (format and arithmetic enforced) or regex "
        "(format only). Off until measured on the real weights.",
    )
    context_length: int | None = Field(
        None,
        ge=512,
        description="Tokens a judge prompt + answer may use; None: what the server reports "
        "(max_model_len), else 8192. Contexts that do not fit drop their oldest rationales.",
    )
    tokenizer: str | None = Field(
        None,
        description="Local path or HF-cache id of the judge's tokenizer (and preprocessor config), used "
        "to count prompt tokens before sending; None: hf_judge_model. Never downloaded.",
    )
    chat_template: Path | None = Field(
        None,
        description="A jinja chat template file the judge server renders prompts with (vLLM: "
        "ops/templates/qwen2_vl.jinja), used to count tokens and by the hf engine; None: the "
        "tokenizer's own.",
    )
    sglang_server: Literal["sglang", "vllm"] = Field(
        "sglang", description="Dialect of the judge server's extra fields: sglang or vllm."
    )
    sglang_url: str = Field(
        "http://127.0.0.1:30000", description="Judge server (SGLang or OpenAI-compatible)."
    )
    sglang_judge_model: str | None = Field(None, description="Served model name; None: the first listed.")
    sglang_judge_revision: str | None = Field(
        None, description="Recorded revision; None: from the served path."
    )
    sglang_reasoner_url: str | None = Field(None, description="Reasoner server; None: the judge's.")
    sglang_reasoner_model: str | None = None
    sglang_reasoner_revision: str | None = None
    sglang_api_key: SecretStr | None = None
    sglang_max_in_flight: int = Field(64, description="Requests open at once per worker process.")
    sglang_timeout_s: float = Field(300.0, description="Read timeout of one request.")
    sglang_max_attempts: int = Field(4, description="Attempts per request on 429/5xx/connection errors.")
    hf_judge_model: str = Field("jeongeunnn/pigreward", description="Local path or HF-cache id of the judge.")
    hf_reasoner_model: str | None = Field(
        "jeongeunnn/pigreward-bootstrap",
        description="Local path or HF-cache id of the reasoner (None: the judge).",
    )
    hf_revision: str | None = None
    hf_device: str = "auto"
    hf_dtype: str = "auto"
    hf_max_batch: int = Field(16, description="Judgments batched into one generate.")
    api_max_body_bytes: int = Field(50 * 1024 * 1024, description="Largest request body the API reads.")
    api_max_batch: int = Field(10_000, description="Most judgments in one batch request.")
    api_max_prompt_chars: int = Field(2_000, description="Longest prompt the API accepts.")
    api_allow_file_uris: bool = Field(
        False, description="Accept file:// image URIs from API clients (inside the image root only)."
    )
    upload_bucket: str | None = Field(
        None, description="Uploaded images go to this S3 bucket; None: under the image root (uploads/)."
    )
    optimize_rewriter: str = Field("modifier", description="Prompt rewriter: modifier (CPU) or llm.")
    optimize_generator: str = Field(
        "procedural",
        description="Image generator: procedural (CPU), openai (/v1/images/generations), external.",
    )
    optimize_output: str = Field(
        "file://optimize",
        description="Where generated images go: file://dir under the image root or s3://bucket/prefix.",
    )
    optimize_image_url: str | None = Field(None, description="OpenAI-compatible image generation server.")
    optimize_image_model: str | None = None
    optimize_llm_url: str | None = Field(
        None, description="OpenAI-compatible text model for the llm rewriter."
    )
    optimize_llm_model: str | None = None
    rescore_hour: int = Field(3, ge=0, le=23, description="Nightly re-scoring time (UTC hour), Celery beat.")
    rescore_minute: int = Field(0, ge=0, le=59)
    metrics_port: int | None = Field(
        None, description="Workers serve Prometheus metrics on this port (one port per worker process)."
    )
    metrics_addr: str = Field("127.0.0.1", description="Address of the workers' metrics endpoint.")
    chunk_concurrency: int = Field(
        32, description="Judgments of one bulk chunk run at once (keeps LVLM servers busy)."
    )
    default_tenant: str = Field("default", description="Tenant used by the CLI and tasks.judge.delay.")
    task_time_limit_s: int = Field(900, description="Hard limit of one task; the longest task we run.")
    visibility_timeout_s: int = Field(
        3600,
        description="Redis redelivers a message its worker never acknowledged after this; it must outlast "
        "the longest task. Recovery does not wait for it (see claim_lease_s).",
    )
    max_retries: int = Field(
        5, description="Retries of a context build's transient errors (backoff, jitter)."
    )
    max_attempts: int = Field(
        8,
        description="Runs of one judgment that end without any recorded outcome (worker crashes, time "
        "limits) before it is failed: a crash loop must end.",
    )
    claim_lease_s: float = Field(
        60.0,
        ge=5,
        description="A worker renews its claims every lease/6 s; a claim not renewed for this long is "
        "presumed dead and its judgment is sent again.",
    )
    reconcile_interval_s: float = Field(
        15.0,
        gt=0,
        description="Every worker process sweeps this often (one at a time per deployment): due retries, "
        "dead claims and lost messages are sent again.",
    )
    retry_backoff_s: float = Field(5.0, gt=0, description="First wait after a transient error.")
    retry_backoff_max_s: float = Field(
        30.0, gt=0, description="Longest wait between retries: bounds how soon work resumes after an outage."
    )
    retry_horizon_s: float = Field(
        24 * 3600.0,
        ge=60,
        description="A judgment whose transient errors last longer than this is failed with the last error.",
    )
    worker_concurrency: int = Field(4, description="Threads per worker process (pigreward worker).")

    @computed_field  # type: ignore[prop-decorator]  # pydantic documents this mypy limitation
    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'pigreward.db').resolve()}"

    @computed_field  # type: ignore[prop-decorator]  # pydantic documents this mypy limitation
    @property
    def resolved_image_root(self) -> Path:
        return (self.image_root or self.data_dir / "images").resolve()

    @property
    def embedded_broker(self) -> bool:
        """True when the broker lives in this process, so the caller must run the worker itself."""
        return self.broker_url.startswith("memory://")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings() -> None:
    """Forget the cached settings (tests and CLI options that change the environment)."""
    get_settings.cache_clear()
