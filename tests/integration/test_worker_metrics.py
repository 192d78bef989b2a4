"""A real worker process serves Prometheus metrics on PIGREWARD_METRICS_PORT while it judges."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from ops.stack import celery_worker, free_port, wait_until
from tasks import judge
from tests.integration.conftest import Stack
from tests.integration.helpers import image, user_who_likes_warm

QUEUE = "metrics-test"


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, by (name, sorted labels)."""
    text = httpx.get(url, timeout=5).raise_for_status().text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: dict, name: str, **labels: str) -> float:
    """The sum of `name` over all samples whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


def test_a_worker_counts_its_judgments_waits_and_task_times(stack: Stack, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    env = {**stack.env, "PIGREWARD_METRICS_PORT": str(port)}
    user_who_likes_warm(stack, "metrics-user")
    pairs = [
        (
            image(stack, f"metrics/{i}-a.png", warmth=0.85, seed=80 + i),
            image(stack, f"metrics/{i}-b.png", warmth=0.15, seed=90 + i),
        )
        for i in range(3)
    ]
    missing = "s3://pigreward-test/metrics/does-not-exist.png"
    with celery_worker(env, QUEUE, tmp_path / "metrics-worker.log"):
        wait_until(lambda: httpx.get(url, timeout=2).status_code == 200, 30, "the worker's metrics endpoint")
        before = scrape(url)
        assert total(before, "pigreward_judgments_total") == 0  # a fresh process counts from zero

        results = [
            judge.apply_async(args=("metrics-user", f"a warm room {i}", a, b), queue=QUEUE)
            for i, (a, b) in enumerate(pairs)
        ]
        results.append(
            judge.apply_async(args=("metrics-user", "a missing image", pairs[0][0], missing), queue=QUEUE)
        )
        statuses = [r.get(timeout=90)["status"] for r in results]
        assert statuses == ["done", "done", "done", "rejected"]

        samples: dict = {}

        def counted() -> bool:  # task_postrun fires just after the result is stored: poll
            nonlocal samples
            samples = scrape(url)
            return total(samples, "pigreward_task_seconds_count", task="pigreward.judge") >= 4

        wait_until(counted, 30, "four judge tasks in pigreward_task_seconds")

    assert total(samples, "pigreward_judgments_total", backend="lite", status="done") == 3
    assert total(samples, "pigreward_judgments_total", backend="lite", status="rejected", winner="none") == 1
    assert total(samples, "pigreward_judgments_total") == 4
    assert total(samples, "pigreward_queue_wait_seconds_count") == 4
    assert total(samples, "pigreward_queue_wait_seconds_sum") >= 0
    assert total(samples, "pigreward_task_seconds_count", task="pigreward.judge") == 4
    assert total(samples, "pigreward_task_seconds_sum", task="pigreward.judge") > 0
    for stage in ("context", "images", "backend"):  # timed on the three judgments that finished
        assert total(samples, "pigreward_stage_seconds_count", stage=stage) == 3, stage
    assert total(samples, "pigreward_parse_failures_total") == 0  # lite never answers off-protocol
    assert total(samples, "pigreward_task_failures_total") == 0  # a rejection is a result, not a failure
    assert total(samples, "pigreward_task_retries_total") == 0
