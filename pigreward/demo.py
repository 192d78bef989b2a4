"""`pigreward demo`: the main job on the embedded default, end to end through the queue.

Generate a synthetic set (users with hidden tastes), register users and references, bootstrap
contexts and judge every held-out test pair through Celery, then score `lite` against a random
and a non-personalized (one global model) baseline.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from core.settings import Settings
from models.batches import create_batch
from models.db import session_scope, upgrade
from models.judgments import get_judgment
from models.references import add_reference
from models.tables import id_of
from models.tenants import ensure_tenant
from models.users import ensure_user
from pigreward import synthetic
from pigreward.progress import bar, wait_for_judgments
from tasks import bootstrap_context
from tasks.config import image_loader
from tasks.embedded import worker_if_embedded
from tasks.runtime import get_db
from tasks.submit import judgment_spec, submit_judgments
from workers.backends.lite import LiteBackend
from workers.imaging import ImageLoader, NormalizedImage
from workers.schemas import ReferenceExample

log = logging.getLogger(__name__)


@dataclass
class UserScore:
    user: str
    references: int
    tests: int = 0
    correct: dict[str, int] = field(default_factory=dict)

    def accuracy(self, method: str) -> float:
        return self.correct.get(method, 0) / self.tests if self.tests else 0.0


@dataclass
class DemoReport:
    methods: list[str]
    users: list[UserScore]
    statuses: dict[str, int]
    seconds: float
    batch_id: int

    def overall(self, method: str) -> float:
        tests = sum(u.tests for u in self.users)
        return sum(u.correct.get(method, 0) for u in self.users) / tests if tests else 0.0

    def render(self) -> str:
        head = f"{'user':<10}{'refs':>6}{'tests':>7}" + "".join(f"{m:>18}" for m in self.methods)
        lines = [head, "-" * len(head)]
        for u in self.users:
            lines.append(
                f"{u.user:<10}{u.references:>6}{u.tests:>7}"
                + "".join(f"{100 * u.accuracy(m):>17.1f}%" for m in self.methods)
            )
        lines.append("-" * len(head))
        tests = sum(u.tests for u in self.users)
        lines.append(
            f"{'overall':<10}{sum(u.references for u in self.users):>6}{tests:>7}"
            + "".join(f"{100 * self.overall(m):>17.1f}%" for m in self.methods)
        )
        status = ", ".join(f"{k} {v}" for k, v in sorted(self.statuses.items()))
        gain = 100 * (self.overall(self.methods[0]) - self.overall(self.methods[-1]))
        lines += [
            "",
            f"judgments: {status}; accuracy counts ties and invalid as wrong",
            f"{self.methods[0]} vs {self.methods[-1]}: {gain:+.1f} points; finished in {self.seconds:.1f}s",
        ]
        return "\n".join(lines)


def register_synthetic_users(data: synthetic.SyntheticSet, *, tenant: str, uri_prefix: str) -> None:
    """Create the simulated users and their reference pairs (images at `uri_prefix` + relative path)."""
    with session_scope(get_db()) as session:
        tenant_id = id_of(ensure_tenant(session=session, name=tenant))
        for u in data.users:
            row = ensure_user(session=session, tenant_id=tenant_id, external_id=u.user_id)
            for ref in u.references:
                add_reference(
                    session=session,
                    user_id=id_of(row),
                    prompt=ref.prompt,
                    chosen_uri=f"{uri_prefix}{ref.chosen}",
                    rejected_uri=f"{uri_prefix}{ref.rejected}",
                )


def run_demo(
    settings: Settings,
    *,
    users: int = 20,
    images: int = 200,
    tests_per_user: int = 10,
    seed: int = 0,
    backend: str = "lite",
    protocol: str | None = None,
    progress: bool = True,
) -> DemoReport:
    started = time.perf_counter()
    upgrade(settings.resolved_database_url)
    set_dir = settings.resolved_image_root / "demo"
    with bar(images, "drawing images", progress, unit="image") as pbar:
        data = synthetic.generate(
            set_dir,
            users=users,
            images=images,
            tests_per_user=tests_per_user,
            seed=seed,
            progress=pbar.update,
        )
    db = get_db()
    tenant = settings.default_tenant

    def uri(name: str) -> str:
        return f"file://demo/{name}"

    register_synthetic_users(data, tenant=tenant, uri_prefix="file://demo/")
    with session_scope(db) as session:
        batch = create_batch(session=session, tenant=tenant, name=f"demo seed={seed}", kind="demo")
        batch_id = id_of(batch)
    options = {"backend": backend, **({"protocol": protocol} if protocol else {})}
    specs = [
        judgment_spec(u.user_id, t.prompt, uri(t.image_a), uri(t.image_b), options, tenant, batch_id)
        for u in data.users
        for t in u.tests
    ]
    with worker_if_embedded():
        contexts = [
            bootstrap_context.delay(u.user_id, tenant=tenant, backend=backend, protocol=protocol)
            for u in data.users
        ]
        with bar(len(contexts), "bootstrapping contexts", progress, unit="user") as pbar:
            for result in contexts:
                outcome = result.get(timeout=3600, disable_sync_subtasks=False)
                if outcome["status"] != "ready":
                    log.warning("context of %s: %s", outcome["user"], outcome.get("error"))
                pbar.update(1)
        ids = submit_judgments(specs)
        statuses = wait_for_judgments(db, ids, progress=progress)

    scores = {u.user_id: UserScore(u.user_id, len(u.references)) for u in data.users}
    labels = [(u.user_id, t) for u in data.users for t in u.tests]
    with session_scope(db) as session:
        for judgment_id, (user_id, test) in zip(ids, labels, strict=True):
            row = get_judgment(session=session, judgment_id=judgment_id)
            score = scores[user_id]
            score.tests += 1
            if row is not None and row.winner == test.label:
                score.correct[backend] = score.correct.get(backend, 0) + 1
    _baselines(data, image_loader(settings), scores, seed)
    methods = [backend, "random", "non-personalized"]
    return DemoReport(methods, list(scores.values()), statuses, time.perf_counter() - started, batch_id)


def _baselines(
    data: synthetic.SyntheticSet, loader: ImageLoader, scores: dict[str, UserScore], seed: int
) -> None:
    """Random coin flips, and one global lite model fitted on every user's references pooled."""
    rng = np.random.default_rng(seed)
    lite = LiteBackend()

    def load(name: str) -> NormalizedImage:
        return loader.load(f"file://demo/{name}")

    pooled = [
        ReferenceExample(r.prompt, load(r.chosen), load(r.rejected)) for u in data.users for r in u.references
    ]
    global_context = lite.build_context(pooled)
    for u in data.users:
        score = scores[u.user_id]
        for t in u.tests:
            guess = "A" if rng.random() < 0.5 else "B"
            score.correct["random"] = score.correct.get("random", 0) + (guess == t.label)
            verdict = lite.judge(global_context, t.prompt, load(t.image_a), load(t.image_b))
            score.correct["non-personalized"] = score.correct.get("non-personalized", 0) + (
                verdict.winner == t.label
            )
