"""Celery tasks and the one submit path.

    tasks.judge.delay(user, prompt, image_a, image_b, options)      one judgment (queue judge)
    tasks.bootstrap_context.delay(user)                              build a user's context (queue context)
    tasks.optimize_prompt.delay(user, prompt, rounds=3, k=4)         optimize a prompt (queue optimize)
    tasks.submit_judgments(specs, chunk_size=50)                     the bulk form (queue bulk)

Every call writes its ledger row first, then sends a message that carries the row's id.
"""

from tasks.app import app
from tasks.contexts import bootstrap_context
from tasks.judgments import judge, judge_chunk, reconcile
from tasks.optimization import optimize_prompt
from tasks.rescoring import rescore_stale
from tasks.submit import judgment_spec, submit_batch, submit_judgments, submit_optimization

__all__ = [
    "app",
    "bootstrap_context",
    "judge",
    "judge_chunk",
    "judgment_spec",
    "optimize_prompt",
    "reconcile",
    "rescore_stale",
    "submit_batch",
    "submit_judgments",
    "submit_optimization",
]
