"""Prompt-optimization task (queue `optimize`): the run row is written first, then the message."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task

from models.db import session_scope
from models.optimization import create_run, finish_run
from pigreward.settings import Settings, get_settings
from tasks.app import app
from tasks.runtime import backend_config, get_resources
from workers.optimize.generators import (
    ExternalGenerator,
    ImageGenerator,
    OpenAIImageGenerator,
    ProceduralGenerator,
)
from workers.optimize.rewriters import LLMRewriter, ModifierRewriter, Rewriter
from workers.optimizer import OptimizeConfig, run_optimization
from workers.store import ImageStore

log = logging.getLogger(__name__)


def build_rewriter(settings: Settings) -> Rewriter:
    if settings.optimize_rewriter == "llm":
        from dataclasses import replace

        from workers.backends.openai_http import OpenAIHTTPEngine

        http = backend_config(settings).http
        http = replace(
            http,
            judge_url=settings.optimize_llm_url or http.judge_url,
            judge_model=settings.optimize_llm_model,
        )
        return LLMRewriter(OpenAIHTTPEngine(http))
    if settings.optimize_rewriter != "modifier":
        raise ValueError(f"unknown rewriter {settings.optimize_rewriter!r}: modifier or llm")
    return ModifierRewriter()


def build_generator(settings: Settings, store: ImageStore) -> ImageGenerator:
    if settings.optimize_generator == "openai":
        if not settings.optimize_image_url:
            raise ValueError("PIGREWARD_OPTIMIZE_IMAGE_URL is needed for the openai image generator")
        return OpenAIImageGenerator(settings.optimize_image_url, store, model=settings.optimize_image_model)
    if settings.optimize_generator == "external":
        return ExternalGenerator(store)
    if settings.optimize_generator != "procedural":
        raise ValueError(f"unknown generator {settings.optimize_generator!r}: procedural, openai or external")
    return ProceduralGenerator(store)


def start_optimization(
    *,
    user: str,
    prompt: str,
    rounds: int = 3,
    k: int = 4,
    tenant: str | None = None,
    backend: str | None = None,
    options: dict[str, Any] | None = None,
    eval_seeds: int = 8,
    seed: int = 0,
) -> int:
    """Record the run, then send it to the `optimize` queue; returns the run id."""
    settings = get_settings()
    with session_scope(get_resources().engine) as session:
        run = create_run(
            session=session,
            tenant=tenant or settings.default_tenant,
            user=user,
            base_prompt=prompt,
            backend=backend or settings.backend,
            rewriter=settings.optimize_rewriter,
            generator=settings.optimize_generator,
            rounds=rounds,
            k=k,
            options=dict(options or {}),
        )
        run_id: int = run.id  # type: ignore[assignment]
    optimize_prompt.apply_async(args=(run_id,), kwargs={"eval_seeds": eval_seeds, "seed": seed})
    return run_id


@app.task(bind=True, name="pigreward.optimize_prompt", max_retries=0)
def optimize_prompt(self: Task, run_id: int, eval_seeds: int = 8, seed: int = 0) -> dict[str, Any]:
    """Run one optimization to its end; failures are recorded on the run row."""
    settings = get_settings()
    res = get_resources()
    try:
        result = run_optimization(
            res=res,
            run_id=run_id,
            rewriter=build_rewriter(settings),
            generator=build_generator(settings, res.loader.store),
            config=OptimizeConfig(eval_seeds=eval_seeds, seed=seed, image_prefix=settings.optimize_output),
        )
    except Exception as exc:
        log.exception("optimization %s failed", run_id)
        with session_scope(res.engine) as session:
            finish_run(session=session, run_id=run_id, status="failed", error=f"{type(exc).__name__}: {exc}")
        raise
    return {
        "run_id": run_id,
        "best_prompt": result.best_prompt,
        "best_win_rate": result.best_win_rate,
        "rounds_done": result.rounds_done,
    }
