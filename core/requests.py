"""One validation model for what a client asks: the REST API, `tasks.judge.delay`, batches and the CLI.

Every way in checks the same limits, strict types and characters before anything reaches the
database, so a NUL byte, an unpaired surrogate, a 100 KB prompt or `swap="yes"` is the same clear
refusal everywhere: a 422 from the API, an `InvalidJudgmentRequest` (a `ValueError`) in Python.
Content checks that need the images (readable, not the same picture) stay in the worker, recorded.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
)

from core.settings import get_settings

BackendName = Literal["lite", "sglang", "hf"]
ProtocolName = Literal["pigreward-v1", "json-v1"]

_FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
"""Control characters (tab, newline and carriage return allowed) and unpaired surrogates: nothing a
person types, and NUL or surrogates are refused by Postgres or UTF-8 anyway."""

_SAFE_TEXT = r"[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]"
"""The schema's form of the same rule (JSON Schema patterns cannot name surrogates)."""

ID_PATTERN = r"^[A-Za-z0-9._:@+-]+$"
S3_BUCKET = r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"
MAX_URI = 2048
UPLOADS_FILE = "file://uploads/"
"""Where uploads land when no upload bucket is set (`uploads/<tenant id>/<sha256>.<ext>`)."""


class InvalidJudgmentRequest(ValueError):
    """A request refused before anything was recorded; the message names each field and rule."""


def clean_text(value: str) -> str:
    """Refuse control characters and unpaired surrogates, naming the first one and where it is."""
    bad = _FORBIDDEN.search(value)
    if bad:
        raise ValueError(f"contains the control character U+{ord(bad.group()):04X} at position {bad.start()}")
    return value


def _prompt_text(value: str) -> str:
    limit = get_settings().api_max_prompt_chars
    if len(value) > limit:
        raise ValueError(f"prompt is longer than {limit} characters ({len(value)})")
    return clean_text(value)


def _prompt(value: str) -> str:
    if not value.strip():
        raise ValueError("prompt is empty")
    return _prompt_text(value)


def _prompt_schema(schema: dict[str, Any]) -> None:
    schema.clear()
    schema.update(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": get_settings().api_max_prompt_chars,
            "pattern": f"^{_SAFE_TEXT}*[^\\s\\u0000-\\u001f\\u007f]{_SAFE_TEXT}*$",
            "description": "What the images were generated from: not blank, no control characters.",
        }
    )


def _image_uri(value: str) -> str:
    """s3://bucket/key (a DNS-valid bucket), or file:// where this deployment reads local files."""
    clean_text(value)
    if value.startswith("s3://"):
        bucket, _, key = value[len("s3://") :].partition("/")
        if not re.fullmatch(S3_BUCKET, bucket) or not key:
            raise ValueError("S3 URIs look like s3://bucket/key, with a DNS-valid bucket name")
        return value
    if value.startswith("file://"):
        if not value[len("file://") :]:
            raise ValueError("file:// URI without a path")
        return value
    if "://" in value:
        raise ValueError(f"image URI scheme {value.split('://', 1)[0]!r} is not allowed: use s3://bucket/key")
    return value  # a plain path: relative to the image root (Python and CLI callers)


def _image_uri_schema(schema: dict[str, Any]) -> None:
    forms = [f"s3://{S3_BUCKET}/{_SAFE_TEXT}+"]
    if get_settings().api_allow_file_uris:
        forms.append(f"file://{_SAFE_TEXT}+")
    else:
        forms.append(f"{UPLOADS_FILE}[0-9]+/[0-9a-f]+\\.[a-z]+")
    schema.clear()
    schema.update(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_URI,
            "pattern": f"^({'|'.join(forms)})$",
            "description": "s3://bucket/key within the tenant's image prefixes"
            + (", or file:// inside the image root" if len(forms) > 1 else ""),
        }
    )


def _api_image_uri(value: str) -> str:
    """What the REST API takes: s3:// always, file:// only where the deployment allows it."""
    if value.startswith("s3://"):
        return value
    if value.startswith("file://"):
        own_upload = value.startswith(UPLOADS_FILE)  # what an upload without an upload bucket returns
        if not own_upload and not get_settings().api_allow_file_uris:
            raise ValueError("file:// URIs are not accepted by this API; use s3:// or upload the image")
        if ".." in value[len("file://") :].split("/"):
            raise ValueError("file:// URIs may not climb out of the image root")
        return value
    raise ValueError("image URI scheme '(none)' is not allowed: use s3://bucket/key")


ExternalId = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=ID_PATTERN)]
"""An end user's id in the client's own system."""
TenantName = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=ID_PATTERN)]
Name = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200),
    AfterValidator(clean_text),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 200, "pattern": f"^{_SAFE_TEXT}+$"}),
]
"""A label (batch name): any printable text."""
Prompt = Annotated[str, AfterValidator(_prompt), Field(json_schema_extra=_prompt_schema)]
ImageUri = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_URI),
    AfterValidator(_image_uri),
    Field(json_schema_extra=_image_uri_schema),
]
"""Any location a worker reads: s3://, file:// or a path relative to the image root (Python, CLI)."""
ApiImageUri = Annotated[ImageUri, AfterValidator(_api_image_uri)]
"""What a REST client may name (tenant scope is checked after: `core.scope`)."""


class JudgmentOptions(BaseModel):
    """How to judge: `backend` and `protocol` default from settings; `swap` judges both orders."""

    model_config = ConfigDict(extra="forbid")

    backend: BackendName | None = None
    protocol: ProtocolName | None = None
    swap: StrictBool | None = None

    def options(self) -> dict[str, Any]:
        """The options as `judgment_spec` takes them (unset ones left to settings)."""
        return self.model_dump(include={"backend", "protocol", "swap"}, exclude_none=True)


class JudgmentRequest(JudgmentOptions):
    """One judgment as a REST client asks for it (a request body, a batch item, a JSONL line)."""

    user: ExternalId
    prompt: Prompt
    image_a: ApiImageUri
    image_b: ApiImageUri


class PythonJudgment(JudgmentOptions):
    """`tasks.judge.delay`'s arguments: the same rules, except that a blank prompt is recorded
    `rejected` by the worker (as before) and local paths are taken (the caller runs the service)."""

    user: ExternalId
    prompt: Annotated[str, AfterValidator(_prompt_text)]
    image_a: ImageUri
    image_b: ImageUri


def describe(error: ValidationError) -> str:
    """One line naming every refused field and why (no input echoed: it may be huge or binary)."""
    parts = []
    for err in error.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "request"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def validate_judgment(
    user: Any, prompt: Any, image_a: Any, image_b: Any, options: Any = None, tenant: Any = None
) -> tuple[PythonJudgment, str | None]:
    """The Python path's check: the request and tenant name, or `InvalidJudgmentRequest`."""
    if options is not None and not isinstance(options, dict):
        raise InvalidJudgmentRequest(f"options: must be a dict, not {type(options).__name__}")
    try:
        request = PythonJudgment.model_validate(
            {"user": user, "prompt": prompt, "image_a": image_a, "image_b": image_b, **(options or {})}
        )
    except ValidationError as exc:
        raise InvalidJudgmentRequest(f"invalid judgment request: {describe(exc)}") from None
    return request, validate_tenant(tenant)


class _TenantField(BaseModel):
    tenant: TenantName | None = None


def validate_tenant(tenant: Any) -> str | None:
    try:
        return _TenantField(tenant=tenant).tenant
    except ValidationError as exc:
        raise InvalidJudgmentRequest(f"invalid judgment request: {describe(exc)}") from None
