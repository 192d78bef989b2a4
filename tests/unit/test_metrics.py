"""Metrics: the pipeline's observer and Celery's signals count into the right Prometheus series."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from celery.signals import task_failure, task_postrun, task_prerun, task_retry
from prometheus_client import REGISTRY

from models.db import make_engine, session_scope, upgrade
from models.judgments import JudgmentSpec, record_judgments
from models.references import add_reference
from models.tenants import ensure_tenant
from models.users import ensure_user
from tasks.metrics import OBSERVER, render_latest
from workers.backends.lite import LiteBackend
from workers.drawing import DrawParams, draw_image
from workers.imaging import ImageLimits, ImageLoader
from workers.pipeline import JudgmentEvent, PipelineEvents, Resources, run_judgment
from workers.store import ImageStore, StoreConfig

REPO = Path(__file__).resolve().parents[2]


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def event(**fields: object) -> JudgmentEvent:
    base: dict[str, object] = {
        "judgment_id": 1,
        "backend": "unit",
        "status": "done",
        "attempt": 1,
        "queue_wait_s": 2.0,
    }
    return JudgmentEvent(**{**base, **fields})  # type: ignore[arg-type]


def test_a_done_judgment_counts_its_winner_stages_tokens_and_wait() -> None:
    before = {
        "done": value("pigreward_judgments_total", backend="unit", status="done", winner="A"),
        "wait": value("pigreward_queue_wait_seconds_count"),
        "wait_sum": value("pigreward_queue_wait_seconds_sum"),
        "backend_stage": value("pigreward_stage_seconds_count", stage="backend"),
        "context_stage": value("pigreward_stage_seconds_count", stage="context"),
        "prompt": value("pigreward_backend_tokens_total", backend="unit", kind="prompt_tokens"),
        "cached": value("pigreward_backend_tokens_total", backend="unit", kind="cached_tokens"),
    }
    OBSERVER.judgment_finished(
        event(
            winner="A",
            timings={"context_s": 0.5, "images_s": 0.01, "backend_s": 1.5},
            usage={"prompt_tokens": 1200, "completion_tokens": 300, "cached_tokens": 800, "repairs": 1},
        )
    )
    assert value("pigreward_judgments_total", backend="unit", status="done", winner="A") == before["done"] + 1
    assert value("pigreward_queue_wait_seconds_count") == before["wait"] + 1
    assert value("pigreward_queue_wait_seconds_sum") == pytest.approx(before["wait_sum"] + 2.0)
    assert value("pigreward_stage_seconds_count", stage="backend") == before["backend_stage"] + 1
    assert value("pigreward_stage_seconds_count", stage="context") == before["context_stage"] + 1
    assert (
        value("pigreward_backend_tokens_total", backend="unit", kind="prompt_tokens")
        == before["prompt"] + 1200
    )
    assert (
        value("pigreward_backend_tokens_total", backend="unit", kind="cached_tokens")
        == before["cached"] + 800
    )
    assert value("pigreward_backend_tokens_total", backend="unit", kind="completion_tokens") >= 300
    assert value("pigreward_backend_tokens_total", backend="unit", kind="repairs") == 0  # not a token kind


def test_an_invalid_judgment_is_a_parse_failure_with_its_reason() -> None:
    before = value("pigreward_parse_failures_total", backend="unit", reason="totals_mismatch")
    invalid = value("pigreward_judgments_total", backend="unit", status="invalid", winner="none")
    OBSERVER.judgment_finished(event(status="invalid", invalid_reason="totals_mismatch"))
    assert value("pigreward_parse_failures_total", backend="unit", reason="totals_mismatch") == before + 1
    assert value("pigreward_judgments_total", backend="unit", status="invalid", winner="none") == invalid + 1


def test_rejected_runs_count_without_stage_times_and_retries_without_queue_wait() -> None:
    stages = value("pigreward_stage_seconds_count", stage="images")
    rejected = value("pigreward_judgments_total", backend="unit", status="rejected", winner="none")
    wait = value("pigreward_queue_wait_seconds_count")
    OBSERVER.judgment_finished(
        event(status="rejected", error_code="image_not_found", timings={"images_s": 0.1})
    )
    OBSERVER.judgment_finished(event(status="done", winner="B", attempt=2, queue_wait_s=60.0))
    assert (
        value("pigreward_judgments_total", backend="unit", status="rejected", winner="none") == rejected + 1
    )
    assert value("pigreward_stage_seconds_count", stage="images") == stages
    assert value("pigreward_queue_wait_seconds_count") == wait + 1  # the first attempt only


class FakeTask:
    name = "pigreward.unit_task"


def test_celery_signals_time_tasks_and_count_retries_and_failures() -> None:
    task = FakeTask()
    runs = value("pigreward_task_seconds_count", task=task.name)
    task_prerun.send(sender=task, task_id="t-1", task=task, args=(), kwargs={})
    task_postrun.send(sender=task, task_id="t-1", task=task, args=(), kwargs={}, retval=None, state="SUCCESS")
    task_postrun.send(sender=task, task_id="never-started", task=task, retval=None, state="SUCCESS")
    assert value("pigreward_task_seconds_count", task=task.name) == runs + 1

    retries = value("pigreward_task_retries_total", task=task.name)
    failures = value("pigreward_task_failures_total", task=task.name)
    task_retry.send(sender=task, request=None, reason="transient", einfo=None)
    task_failure.send(sender=task, task_id="t-2", exception=RuntimeError("x"), args=(), kwargs={})
    assert value("pigreward_task_retries_total", task=task.name) == retries + 1
    assert value("pigreward_task_failures_total", task=task.name) == failures + 1


def test_render_latest_is_the_text_exposition_of_every_series() -> None:
    OBSERVER.judgment_finished(event(winner="tie"))
    text = render_latest().decode()
    for name in (
        "pigreward_judgments_total",
        "pigreward_parse_failures_total",
        "pigreward_task_seconds",
        "pigreward_queue_wait_seconds",
        "pigreward_stage_seconds",
        "pigreward_backend_tokens_total",
        "pigreward_task_retries_total",
        "pigreward_task_failures_total",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in text, name
    assert 'pigreward_judgments_total{backend="unit",status="done",winner="tie"}' in text


def test_multiprocess_mode_merges_what_other_processes_counted(tmp_path: Path) -> None:
    """Prefork children write to PROMETHEUS_MULTIPROC_DIR; any process there renders the sum."""
    code = (
        "from tasks.metrics import OBSERVER\n"
        "from workers.pipeline import JudgmentEvent\n"
        "OBSERVER.judgment_finished(JudgmentEvent(judgment_id=1, backend='mp', status='done',"
        " attempt=1, queue_wait_s=1.0, winner='A'))\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for _ in range(2):  # two "children"
        subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True, timeout=120)
    render = "from tasks.metrics import render_latest; import sys; sys.stdout.write(render_latest().decode())"
    out = subprocess.run(
        [sys.executable, "-c", render],
        cwd=REPO,
        env=env,
        check=True,
        timeout=120,
        capture_output=True,
        text=True,
    ).stdout
    assert 'pigreward_judgments_total{backend="mp",status="done",winner="A"} 2.0' in out
    assert "pigreward_queue_wait_seconds_count 2.0" in out


# -- the pipeline reports through Resources.events ------------------------------------------------


class Recorder(PipelineEvents):
    def __init__(self) -> None:
        self.events: list[JudgmentEvent] = []

    def judgment_finished(self, event: JudgmentEvent) -> None:
        self.events.append(event)


class Broken(PipelineEvents):
    def judgment_finished(self, event: JudgmentEvent) -> None:
        raise RuntimeError("observer bug")


@pytest.fixture
def res(tmp_path: Path) -> Resources:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    root = tmp_path / "images"
    root.mkdir()
    for i in range(4):
        params = DrawParams(
            warmth=0.9 if i % 2 == 0 else 0.1,
            saturation=0.6,
            brightness=0.5,
            clutter=0.3,
            centering=0.5,
            symmetry=0.5,
            seed=i,
        )
        draw_image(params, size=64).save(root / f"{i}.png")
    backend = LiteBackend()
    engine = make_engine(url)
    with session_scope(engine) as session:
        tenant = ensure_tenant(session=session, name="default")
        user = ensure_user(session=session, tenant_id=tenant.id, external_id="u")  # type: ignore[arg-type]
        for c, r in [(0, 1), (2, 3)]:
            add_reference(
                session=session,
                user_id=user.id,
                prompt=f"p{c}",
                chosen_uri=f"{c}.png",
                rejected_uri=f"{r}.png",
            )  # type: ignore[arg-type]
    return Resources(
        db=engine,
        loader=ImageLoader(ImageStore(StoreConfig(image_root=root)), ImageLimits()),
        backend_for=lambda name, protocol=None: backend,
    )


def _submit(res: Resources, image_a: str, image_b: str) -> int:
    spec = JudgmentSpec(tenant="default", user="u", prompt="warm things", image_a=image_a, image_b=image_b)
    with session_scope(res.db) as session:
        [jid] = record_judgments(session=session, specs=[spec])
    return jid


def test_the_pipeline_reports_each_run_that_ends(res: Resources) -> None:
    res.events = recorder = Recorder()
    good = _submit(res, "0.png", "1.png")
    missing = _submit(res, "0.png", "nope.png")
    assert run_judgment(res=res, judgment_id=good, token="t1").status == "done"
    assert run_judgment(res=res, judgment_id=missing, token="t2").status == "rejected"
    assert run_judgment(res=res, judgment_id=good, token="t3").skipped  # finished: not a run, no event
    done, rejected = recorder.events
    assert (done.judgment_id, done.status, done.backend, done.attempt) == (good, "done", "lite", 1)
    assert done.winner in {"A", "B", "tie"} and set(done.timings) == {"context_s", "images_s", "backend_s"}
    assert done.queue_wait_s is not None and 0 <= done.queue_wait_s < 60
    assert (rejected.status, rejected.error_code, rejected.winner) == ("rejected", "image_not_found", None)


def test_a_failing_observer_never_changes_the_outcome(res: Resources) -> None:
    res.events = Broken()
    summary = run_judgment(res=res, judgment_id=_submit(res, "2.png", "3.png"), token="t")
    assert summary.status == "done"
