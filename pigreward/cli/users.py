"""`pigreward refs`: users' reference pairs (users are created on first use); `pigreward users show`."""

from __future__ import annotations

from typing import Any

import click
from sqlmodel import Session

from core.errors import PermanentError, TransientError
from core.settings import get_settings
from models.contexts import latest_context
from models.db import session_scope
from models.references import add_reference, list_references, remove_reference
from models.tenants import ensure_tenant
from models.users import ensure_user, find_user
from pigreward.cli.common import as_uri, local_file, migrated_db
from tasks.config import image_loader
from workers.imaging import ImageLoader, normalize
from workers.quality import ContextQuality


@click.group()
def refs() -> None:
    """Users' reference pairs."""


@refs.command("add")
@click.option("--user", required=True, help="The end user's external id (created if new).")
@click.option("--prompt", required=True)
@click.argument("chosen")
@click.argument("rejected")
def refs_add(user: str, prompt: str, chosen: str, rejected: str) -> None:
    """Add one reference pair: the user preferred CHOSEN over REJECTED (local files or URIs).

    Both images are read and decoded first: a missing or unusable one is refused here, by name,
    instead of rejecting every later judgment of this user."""
    settings = get_settings()
    db = migrated_db()
    loader = image_loader(settings)
    for name, value in (("CHOSEN", chosen), ("REJECTED", rejected)):
        _check_image(loader, name, value)
    chosen_uri, rejected_uri = as_uri(chosen, loader.store), as_uri(rejected, loader.store)
    with session_scope(db) as session:
        tenant = ensure_tenant(session=session, name=settings.default_tenant)
        assert tenant.id is not None
        row = ensure_user(session=session, tenant_id=tenant.id, external_id=user)
        assert row.id is not None
        ref = add_reference(
            session=session, user_id=row.id, prompt=prompt, chosen_uri=chosen_uri, rejected_uri=rejected_uri
        )
    click.echo(f"reference {ref.id} for user {user!r}: {chosen_uri} > {rejected_uri}")


def _check_image(loader: ImageLoader, name: str, value: str) -> None:
    if "://" not in value:
        try:
            normalize(local_file(value).read_bytes(), value, loader.limits)
        except PermanentError as exc:
            raise click.BadParameter(exc.message, param_hint=name) from None
        return
    try:
        loader.load(value)
    except PermanentError as exc:
        raise click.BadParameter(exc.message, param_hint=name) from None
    except TransientError as exc:
        raise click.ClickException(f"{name} {value}: cannot be read now, try again: {exc.message}") from None


def _user_id(session: Session, user: str) -> int:
    tenant = ensure_tenant(session=session, name=get_settings().default_tenant)
    assert tenant.id is not None
    row = find_user(session=session, tenant_id=tenant.id, external_id=user)
    if row is None or row.id is None:
        raise click.ClickException(f"no user {user!r} in tenant {tenant.name!r}")
    return row.id


@refs.command("list")
@click.option("--user", required=True, help="The end user's external id.")
def refs_list(user: str) -> None:
    """The user's reference pairs: id, prompt, chosen > rejected."""
    with session_scope(migrated_db()) as session:
        pairs = list_references(session=session, user_id=_user_id(session, user))
        for r in pairs:
            click.echo(f"{r.id}\t{r.prompt}\t{r.chosen_uri} > {r.rejected_uri}")
    click.echo(f"{len(pairs)} reference pairs for user {user!r}", err=True)


@refs.command("remove")
@click.option("--user", required=True, help="The end user's external id.")
@click.argument("reference_id", type=click.IntRange(min=1))
def refs_remove(user: str, reference_id: int) -> None:
    """Remove one reference pair (ids from `refs list`); the user's next judgment builds a fresh
    context from the remaining pairs (contexts are keyed by the pairs they were built from)."""
    with session_scope(migrated_db()) as session:
        user_id = _user_id(session, user)
        if remove_reference(session=session, user_id=user_id, reference_id=reference_id) is None:
            raise click.ClickException(f"user {user!r} has no reference pair {reference_id}")
        left = len(list_references(session=session, user_id=user_id))
    click.echo(
        f"reference {reference_id} removed from user {user!r}; {left} left, "
        "its context is rebuilt from them on the next judgment"
    )


@click.group()
def users() -> None:
    """End users: what the service knows about each one."""


@users.command("show")
@click.argument("user")
def users_show(user: str) -> None:
    """USER's references and newest context, with the context's leave-one-out quality and the
    rationales that predict none of the held-out choices."""
    with session_scope(migrated_db()) as session:
        user_id = _user_id(session, user)
        pairs = list_references(session=session, user_id=user_id)
        context = latest_context(session=session, user_id=user_id)
    click.echo(f"user {user!r}: {len(pairs)} reference pairs")
    if context is None:
        click.echo("context: none yet (built on the first judgment, or `POST /v1/users/{id}/context`)")
        return
    click.echo(
        f"context {context.id}: {context.backend} {context.model_id}@{context.model_revision} "
        f"({context.template_version}), {len(context.rationales)} rationales, built {context.created_at:%Y-%m-%d %H:%M}"
    )
    # reference indices name today's pairs only if the context was built from as many (else: by number)
    prompts = [p.prompt for p in pairs] if context.reference_count == len(pairs) else []
    for line in describe_quality(context.quality, prompts, context.rationales):
        click.echo(line)


def describe_quality(quality: dict[str, Any] | None, prompts: list[str], rationales: list[str]) -> list[str]:
    """The context-quality lines `users show` prints (and the viewer mirrors)."""
    if not quality:
        return [
            "quality: not computed (PIGREWARD_CONTEXT_QUALITY is off for this backend, or < 2 references)"
        ]
    checked = ContextQuality.model_validate(quality)
    lines = [
        f"quality: leave-one-out accuracy {checked.accuracy:.0%} ({checked.correct} of {checked.held_out} "
        f"held-out choices predicted; score {checked.score:.2f})"
    ]
    if checked.agreement is not None:
        lines.append(f"both orders agreed on {checked.agreement:.0%} of the held-out pairs")
    if not checked.flagged:
        lines.append("flagged rationales: none")
    for i in checked.flagged:
        prompt = prompts[i] if i < len(prompts) else "?"
        text = rationales[i] if len(rationales) == len(prompts) and i < len(rationales) else ""
        lines.append(
            f"flagged: reference {i + 1} ({prompt!r}) predicts none of the held-out choices ({checked.flag_rule})"
        )
        if text:
            lines.append(f"  rationale: {text}")
    return lines
