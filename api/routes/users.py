"""End users, their reference pairs and their contexts."""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, Query, UploadFile, status
from fastapi.exceptions import RequestValidationError
from sqlmodel import Session

from api.deps import ImagesDep, SessionDep, TenantDep, scope_of
from api.routes.judgments import DbId
from api.schemas import (
    COMMON,
    FORBIDDEN,
    NOT_FOUND,
    ContextPublic,
    ContextRequest,
    ContextStarted,
    DeletedUser,
    ReferenceCreate,
    ReferencePublic,
    RemovedReference,
    UserCreate,
    UserPublic,
)
from core.errors import PermanentError
from core.requests import ExternalId, Prompt
from core.settings import get_settings
from models.contexts import latest_context
from models.references import add_reference, list_references, remove_reference
from models.tables import EndUser, Tenant
from models.users import delete_user, ensure_user, find_user, list_users, user_counts
from tasks import bootstrap_context
from tasks.config import image_limits
from workers.imaging import ImageLoader, normalize

router = APIRouter(prefix="/users", tags=["users"], responses=COMMON)
USER_NOT_FOUND = "user not found"


def _user(session: Session, tenant: Tenant, external_id: str) -> EndUser:
    assert tenant.id is not None
    user = find_user(session=session, tenant_id=tenant.id, external_id=external_id)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, USER_NOT_FOUND)
    return user


def _public(session: Session, user: EndUser) -> UserPublic:
    assert user.id is not None
    return UserPublic.of(user, *user_counts(session=session, user_id=user.id))


@router.post("", status_code=status.HTTP_201_CREATED)
def create_user(body: UserCreate, session: SessionDep, tenant: TenantDep) -> UserPublic:
    """Create an end user (idempotent: an existing user is returned)."""
    assert tenant.id is not None
    return _public(session, ensure_user(session=session, tenant_id=tenant.id, external_id=body.external_id))


@router.get("")
def get_users(
    session: SessionDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> list[UserPublic]:
    """List the tenant's end users."""
    assert tenant.id is not None
    rows = list_users(session=session, tenant_id=tenant.id, limit=limit, offset=offset)
    return [_public(session, u) for u in rows]


@router.get("/{external_id}", responses=NOT_FOUND)
def get_user(external_id: ExternalId, session: SessionDep, tenant: TenantDep) -> UserPublic:
    """One end user with counts of references and contexts."""
    return _public(session, _user(session, tenant, external_id))


@router.delete("/{external_id}", responses=NOT_FOUND)
def remove_user(external_id: ExternalId, session: SessionDep, tenant: TenantDep) -> DeletedUser:
    """Delete a user with everything derived from them: references, contexts, judgments."""
    assert tenant.id is not None
    counts = delete_user(session=session, tenant_id=tenant.id, external_id=external_id)
    if counts is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, USER_NOT_FOUND)
    return DeletedUser(external_id=external_id, deleted=counts)


@router.post(
    "/{external_id}/references", status_code=status.HTTP_201_CREATED, responses={**NOT_FOUND, **FORBIDDEN}
)
def create_reference(
    external_id: ExternalId, body: ReferenceCreate, session: SessionDep, tenant: TenantDep, images: ImagesDep
) -> ReferencePublic:
    """Add a reference pair by image URIs: this user preferred `chosen` over `rejected`.

    Both images are read and decoded first: a missing, unreadable or oversized one is a 422 naming it
    (a bad pair would otherwise reject every later judgment of this user)."""
    user = _user(session, tenant, external_id)
    assert user.id is not None
    scope = scope_of(tenant)
    scope.check(body.chosen, "chosen")
    scope.check(body.rejected, "rejected")
    _check_readable(images, body.chosen, "chosen")
    _check_readable(images, body.rejected, "rejected")
    ref = add_reference(
        session=session,
        user_id=user.id,
        prompt=body.prompt,
        chosen_uri=body.chosen,
        rejected_uri=body.rejected,
    )
    return ReferencePublic.model_validate(ref)


@router.post("/{external_id}/references/upload", status_code=status.HTTP_201_CREATED, responses=NOT_FOUND)
def upload_reference(
    external_id: ExternalId,
    session: SessionDep,
    tenant: TenantDep,
    images: ImagesDep,
    prompt: Annotated[Prompt, Form()],
    chosen: Annotated[UploadFile, File()],
    rejected: Annotated[UploadFile, File()],
) -> ReferencePublic:
    """Add a reference pair by uploading both images (stored by content hash)."""
    user = _user(session, tenant, external_id)
    assert user.id is not None
    chosen_uri = _store_upload(images, tenant, chosen, "chosen")
    rejected_uri = _store_upload(images, tenant, rejected, "rejected")
    ref = add_reference(
        session=session, user_id=user.id, prompt=prompt, chosen_uri=chosen_uri, rejected_uri=rejected_uri
    )
    return ReferencePublic.model_validate(ref)


@router.delete("/{external_id}/references/{reference_id:int}", responses=NOT_FOUND)
def delete_reference(
    external_id: ExternalId, reference_id: DbId, session: SessionDep, tenant: TenantDep
) -> RemovedReference:
    """Remove one reference pair; the user's context is rebuilt from the remaining pairs (queue `context`)."""
    user = _user(session, tenant, external_id)
    assert user.id is not None
    row = remove_reference(session=session, user_id=user.id, reference_id=reference_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "reference pair not found")
    remaining = len(list_references(session=session, user_id=user.id))
    session.commit()
    task_id = bootstrap_context.delay(external_id, tenant=tenant.name).id if remaining else None
    return RemovedReference(id=reference_id, remaining=remaining, context_task_id=task_id)


@router.get("/{external_id}/references", responses=NOT_FOUND)
def get_references(external_id: ExternalId, session: SessionDep, tenant: TenantDep) -> list[ReferencePublic]:
    """The user's reference pairs, oldest first."""
    user = _user(session, tenant, external_id)
    assert user.id is not None
    return [ReferencePublic.model_validate(r) for r in list_references(session=session, user_id=user.id)]


@router.post("/{external_id}/context", status_code=status.HTTP_202_ACCEPTED, responses=NOT_FOUND)
def start_context(
    external_id: ExternalId, session: SessionDep, tenant: TenantDep, body: ContextRequest | None = None
) -> ContextStarted:
    """Start building the user's context for the current references (queue `context`)."""
    _user(session, tenant, external_id)
    body = body or ContextRequest()
    result = bootstrap_context.delay(
        external_id, tenant=tenant.name, backend=body.backend, protocol=body.protocol
    )
    return ContextStarted(task_id=result.id, status="queued")


@router.get("/{external_id}/context", responses=NOT_FOUND)
def get_context(external_id: ExternalId, session: SessionDep, tenant: TenantDep) -> ContextPublic:
    """The user's most recent context: rationales, versions, and the backend's payload."""
    user = _user(session, tenant, external_id)
    assert user.id is not None
    row = latest_context(session=session, user_id=user.id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no context yet: POST .../context to build one")
    return ContextPublic.model_validate(row)


def _invalid(field: str, message: str, where: str = "body") -> RequestValidationError:
    return RequestValidationError([{"loc": [where, field], "msg": message, "type": "value_error"}])


def _check_readable(images: ImageLoader, uri: str, field: str) -> None:
    """Read and decode a reference image now: permanent trouble is the client's (422), transient
    trouble is ours (503 with Retry-After, from the app's handler)."""
    try:
        images.load(uri)
    except PermanentError as exc:
        raise _invalid(field, f"{field}: {exc.message}") from None


def _store_upload(images: ImageLoader, tenant: Tenant, upload: UploadFile, field: str) -> str:
    settings = get_settings()
    data = upload.file.read(settings.max_image_bytes + 1)
    if len(data) > settings.max_image_bytes:
        raise HTTPException(413, f"{field}: image over {settings.max_image_bytes} bytes")
    try:
        img = normalize(data, upload.filename or field, image_limits(settings))
    except PermanentError as exc:
        raise _invalid(field, f"{field}: {exc.message}") from None
    name = f"uploads/{tenant.id}/{hashlib.sha256(data).hexdigest()}.{img.format.lower()}"
    if settings.upload_bucket:
        return images.store.put(f"s3://{settings.upload_bucket}/{name}", data)
    return images.store.write_file(name, data)
