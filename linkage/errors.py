"""The one exception hierarchy of pprl.

Subclasses say what the user must do; the CLI and the service map them to an exit code
and an HTTP status through class attributes, in one place each.
"""

from __future__ import annotations

from collections.abc import Sequence


class PprlError(Exception):
    """Base of every error pprl raises on purpose.

    Attributes:
        exit_code: process exit code the CLI uses for this error.
        http_status: status the service answers with.
        code: stable machine-readable identifier for JSON error bodies.
    """

    exit_code = 1
    http_status = 400
    code = "pprl_error"

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        column: str | None = None,
        field: str | None = None,
        problems: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.line = line
        self.column = column
        self.field = field
        self.problems = tuple(problems)

    def __str__(self) -> str:
        if not self.problems:
            return self.message
        listed = "\n".join(f"  - {problem}" for problem in self.problems)
        return f"{self.message}\n{listed}"


class InputError(PprlError):
    """A CSV, encodings or other input file is wrong; fix the file."""

    code = "invalid_input"


class ProtocolError(PprlError):
    """The information-sharing protocol file is invalid; fix the protocol."""

    code = "invalid_protocol"


class SecretError(PprlError):
    """The shared secret is missing, unreadable or of the wrong length."""

    code = "invalid_secret"


class MismatchError(PprlError):
    """Inputs that must agree (protocol, secret, bit length, party) do not."""

    code = "mismatch"
    http_status = 409


class OutputExistsError(PprlError):
    """Refusing to overwrite a file or folder that already exists."""

    code = "output_exists"
    http_status = 409


class BudgetExceeded(PprlError):
    """A release would spend more privacy budget than is left."""

    exit_code = 3
    http_status = 409
    code = "budget_exceeded"


class Unauthorized(PprlError):
    """No credential, or one the service does not know; pass the right token file."""

    http_status = 401
    code = "unauthorized"


class Forbidden(PprlError):
    """The credential is valid, but not for this project, role or party."""

    http_status = 403
    code = "forbidden"


class NotFound(PprlError):
    """No such project, run or result."""

    http_status = 404
    code = "not_found"


class Conflict(PprlError):
    """The request conflicts with what is stored: another upload, a run in progress, missing uploads."""

    http_status = 409
    code = "conflict"


class PayloadTooLarge(PprlError):
    """A request body is larger than the service accepts."""

    http_status = 413
    code = "too_large"


class UnsupportedMediaType(PprlError):
    """A request body has the wrong content type."""

    http_status = 415
    code = "unsupported_media_type"


class ServiceError(PprlError):
    """The linkage service cannot be reached, or answered something this client does not understand."""

    http_status = 502
    code = "service_error"


class TamperedError(PprlError):
    """A hash-chained record (the audit log, a ledger) was changed, cut or reordered at rest."""

    exit_code = 4
    http_status = 409
    code = "tampered"


class TooManyRequests(PprlError):
    """A client sent more requests than the service accepts per second; wait and retry."""

    http_status = 429
    code = "rate_limited"
