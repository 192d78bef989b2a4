"""The errors of the judging pipeline.

    PigrewardError
    ├── PermanentError          bad input: recorded on the row as `rejected`, never retried
    │   ├── ImageNotFound       missing S3 key / file
    │   ├── ImageUnreadable     corrupt bytes, not an image
    │   ├── ImageTooLarge       byte limit or pixel limit (decompression bombs)
    │   ├── ForbiddenLocation   file:// outside the image root, bucket not allowed, unknown scheme
    │   ├── UnknownUser
    │   ├── NoReferences        a user without reference pairs has no context to judge with
    │   ├── InvalidRequest      empty prompt, same image as A and B, ...
    │   ├── UnknownBackend      a backend name this worker does not have
    │   └── BackendRejected     the backend refused the request itself (4xx other than 429)
    ├── ConfigurationError      the deployment is misconfigured (e.g. no S3 credentials): `failed`,
    │                           naming the setting, never retried (retrying cannot fix it)
    └── TransientError          worth retrying with backoff (Celery `autoretry_for` names this branch)
        ├── StoreUnavailable    S3 / disk connection problems, throttling
        ├── DatabaseUnavailable connection lost, deadlock, serialization failure
        ├── BackendUnavailable  model server down, 429, 5xx, timeouts
        └── ImageNotReady       an external generator has not written the requested image yet

Each class carries a stable `code` that is stored in `judgment.error_code`.
"""

from __future__ import annotations


class PigrewardError(Exception):
    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigurationError(PigrewardError):
    code = "configuration_error"


class PermanentError(PigrewardError):
    code = "permanent_error"


class ImageNotFound(PermanentError):
    code = "image_not_found"


class ImageUnreadable(PermanentError):
    code = "image_unreadable"


class ImageTooLarge(PermanentError):
    code = "image_too_large"


class ForbiddenLocation(PermanentError):
    code = "forbidden_location"


class UnknownUser(PermanentError):
    code = "unknown_user"


class NoReferences(PermanentError):
    code = "no_references"


class InvalidRequest(PermanentError):
    code = "invalid_request"


class UnknownBackend(PermanentError):
    code = "unknown_backend"


class BackendRejected(PermanentError):
    code = "backend_rejected"


class TransientError(PigrewardError):
    code = "transient_error"


class StoreUnavailable(TransientError):
    code = "store_unavailable"


class DatabaseUnavailable(TransientError):
    code = "database_unavailable"


class BrokerUnavailable(TransientError):
    code = "broker_unavailable"


class BackendUnavailable(TransientError):
    code = "backend_unavailable"


class ImageNotReady(TransientError):
    code = "image_not_ready"
