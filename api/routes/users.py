"""End users, their reference pairs and their contexts."""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, Query, UploadFile, status
from sqlmodel import col, func, select

from api.deps import SessionDep, TenantDep
from api.schemas import (
    ContextPublic,
    ContextRequest,
    DeletedUser,
    ExternalId,
    Prompt,
    ReferenceCreate,
    ReferencePublic,
    UserCreate,
    UserPublic,
)
from models.tables import EndUser, ReferencePair, Tenant, UserContext
from models.users import add_reference, delete_user, ensure_user, find_user, list_references, list_users
from pigreward.settings import get_settings
from tasks import bootstrap_context
from tasks.runtime import get_resources
from workers.errors import PermanentError
from workers.imaging import ImageLimits, normalize

router = APIRouter(prefix="/users", tags=["users"])
USER_NOT_FOUND = "user not found"


def _user(session, tenant: Tenant, external_id: str) -> EndUser:  # type: ignore[no-untyped-def]
    user = find_user(session=session, tenant_id=tenant.id, external_id=external_id)  # type: ignore[arg-type]
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, USER_NOT_FOUND)
    return user


def _public(session, user: EndUser) -> UserPublic:  # type: ignore[no-untyped-def]
    refs = session.exec(select(func.count()).where(ReferencePair.user_id == user.id)).one()
    contexts = session.exec(select(func.count()).where(UserContext.user_id == user.id)).one()
    return UserPublic(
        external_id=user.external_id, created_at=user.created_at, references=refs, contexts=contexts
    )


@router.post("", status_code=status.HTTP_201_CREATED)
def create_user(body: UserCreate, session: SessionDep, tenant: TenantDep) -> UserPublic:
    """Create an end user (idempotent: an existing user is returned)."""
    user = ensure_user(session=session, tenant_id=tenant.id, external_id=body.external_id)  # type: ignore[arg-type]
    return _public(session, user)


@router.get("")
def get_users(
    session: SessionDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> list[UserPublic]:
    """List the tenant's end users."""
    rows = list_users(session=session, tenant_id=tenant.id, limit=limit, offset=offset)  # type: ignore[arg-type]
    return [_public(session, u) for u in rows]


@router.get("/{external_id}")
def get_user(external_id: ExternalId, session: SessionDep, tenant: TenantDep) -> UserPublic:
    """One end user with counts of references and contexts."""
    return _public(session, _user(session, tenant, external_id))


@router.delete("/{external_id}")
def remove_user(external_id: ExternalId, session: SessionDep, tenant: TenantDep) -> DeletedUser:
    """Delete a user with everything derived from them: references, contexts, judgments."""
    counts = delete_user(session=session, tenant_id=tenant.id, external_id=external_id)  # type: ignore[arg-type]
    if counts is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, USER_NOT_FOUND)
    return DeletedUser(external_id=external_id, deleted=counts)


@router.post("/{external_id}/references", status_code=status.HTTP_201_CREATED)
def create_reference(
    external_id: ExternalId, body: ReferenceCreate, session: SessionDep, tenant: TenantDep
) -> ReferencePublic:
    """Add a reference pair by image URIs: this user preferred `chosen` over `rejected`."""
    user = _user(session, tenant, external_id)
    ref = add_reference(
        session=session,
        user_id=user.id,
        prompt=body.prompt,
        chosen_uri=body.chosen,
        rejected_uri=body.rejected,  # type: ignore[arg-type]
    )
    return ReferencePublic(
        id=ref.id,
        prompt=ref.prompt,
        chosen=ref.chosen_uri,
        rejected=ref.rejected_uri,
        created_at=ref.created_at,
    )  # type: ignore[arg-type]


@router.post("/{external_id}/references/upload", status_code=status.HTTP_201_CREATED)
def upload_reference(
    external_id: ExternalId,
    session: SessionDep,
    tenant: TenantDep,
    prompt: Annotated[Prompt, Form()],
    chosen: Annotated[UploadFile, File()],
    rejected: Annotated[UploadFile, File()],
) -> ReferencePublic:
    """Add a reference pair by uploading both images (stored by content hash)."""
    user = _user(session, tenant, external_id)
    chosen_uri = _store_upload(tenant, chosen, "chosen")
    rejected_uri = _store_upload(tenant, rejected, "rejected")
    ref = add_reference(
        session=session, user_id=user.id, prompt=prompt, chosen_uri=chosen_uri, rejected_uri=rejected_uri
    )  # type: ignore[arg-type]
    return ReferencePublic(
        id=ref.id,
        prompt=ref.prompt,
        chosen=ref.chosen_uri,
        rejected=ref.rejected_uri,
        created_at=ref.created_at,
    )  # type: ignore[arg-type]


@router.get("/{external_id}/references")
def get_references(external_id: ExternalId, session: SessionDep, tenant: TenantDep) -> list[ReferencePublic]:
    """The user's reference pairs, oldest first."""
    user = _user(session, tenant, external_id)
    return [
        ReferencePublic(
            id=r.id, prompt=r.prompt, chosen=r.chosen_uri, rejected=r.rejected_uri, created_at=r.created_at
        )  # type: ignore[arg-type]
        for r in list_references(session=session, user_id=user.id)  # type: ignore[arg-type]
    ]


@router.post("/{external_id}/context", status_code=status.HTTP_202_ACCEPTED)
def start_context(
    external_id: ExternalId, session: SessionDep, tenant: TenantDep, body: ContextRequest | None = None
) -> dict[str, str]:
    """Start building the user's context for the current references (queue `context`)."""
    _user(session, tenant, external_id)
    body = body or ContextRequest()
    result = bootstrap_context.delay(
        external_id, tenant=tenant.name, backend=body.backend, protocol=body.protocol
    )
    return {"task_id": result.id, "status": "queued"}


@router.get("/{external_id}/context")
def get_context(external_id: ExternalId, session: SessionDep, tenant: TenantDep) -> ContextPublic:
    """The user's most recent context: rationales, versions, and the backend's payload."""
    user = _user(session, tenant, external_id)
    row = session.exec(
        select(UserContext).where(UserContext.user_id == user.id).order_by(col(UserContext.id).desc())
    ).first()
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no context yet: POST .../context to build one")
    return ContextPublic.model_validate(row, from_attributes=True)


def _store_upload(tenant: Tenant, upload: UploadFile, field: str) -> str:
    settings = get_settings()
    data = upload.file.read(settings.max_image_bytes + 1)
    if len(data) > settings.max_image_bytes:
        raise HTTPException(413, f"{field}: image over {settings.max_image_bytes} bytes")
    try:
        img = normalize(data, upload.filename or field, ImageLimits(max_pixels=settings.max_image_pixels))
    except PermanentError as exc:
        raise HTTPException(422, f"{field}: {exc.message}") from exc
    name = f"uploads/{tenant.id}/{hashlib.sha256(data).hexdigest()}.{img.format.lower()}"
    store = get_resources().loader.store
    if settings.upload_bucket:
        store.s3.put_object(Bucket=settings.upload_bucket, Key=name, Body=data)
        return f"s3://{settings.upload_bucket}/{name}"
    return store.write_file(name, data)
