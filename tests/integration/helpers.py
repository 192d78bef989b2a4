"""Test data through the app's own functions: users, references and images on the real stack."""

from __future__ import annotations

from sqlmodel import select

from models.db import session_scope
from models.references import add_reference
from models.tables import DimensionScore, Judgment
from models.tenants import ensure_tenant
from models.users import ensure_user
from tasks.runtime import get_db
from tests.integration.conftest import Stack, png_bytes
from workers.drawing import DrawParams, draw_image


def image(stack: Stack, key: str, *, warmth: float, brightness: float = 0.6, seed: int = 0) -> str:
    """Draw a synthetic image with the given warmth, upload it to S3, return its URI."""
    params = DrawParams(
        warmth=warmth,
        saturation=0.7,
        brightness=brightness,
        clutter=0.3,
        centering=0.6,
        symmetry=0.4,
        seed=seed,
    )
    return stack.put(key, png_bytes(draw_image(params, size=128)))


def user_who_likes_warm(stack: Stack, user: str, *, warm: bool = True, tenant: str = "default") -> None:
    """A user with 6 references, each choosing the warmer (or cooler) image."""
    engine = get_db()
    with session_scope(engine) as session:
        t = ensure_tenant(session=session, name=tenant)
        row = ensure_user(session=session, tenant_id=t.id, external_id=user)  # type: ignore[arg-type]
        for i in range(6):
            hot = image(stack, f"refs/{i}-hot.png", warmth=0.9, brightness=0.3 + 0.1 * i, seed=i)
            cold = image(stack, f"refs/{i}-cold.png", warmth=0.1, brightness=0.8 - 0.1 * i, seed=100 + i)
            chosen, rejected = (hot, cold) if warm else (cold, hot)
            add_reference(
                session=session,
                user_id=row.id,
                prompt=f"scene {i}",
                chosen_uri=chosen,
                rejected_uri=rejected,  # type: ignore[arg-type]
            )


def judgment_rows(key_filter=None) -> list[Judgment]:  # type: ignore[no-untyped-def]
    with session_scope(get_db()) as session:
        rows = list(session.exec(select(Judgment).order_by(Judgment.id)))  # type: ignore[arg-type]
    return [r for r in rows if key_filter is None or key_filter(r)]


def dimension_count(judgment_id: int) -> int:
    with session_scope(get_db()) as session:
        return len(
            list(session.exec(select(DimensionScore).where(DimensionScore.judgment_id == judgment_id)))
        )
