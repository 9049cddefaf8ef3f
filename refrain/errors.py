"""The application's errors: one base and the few kinds of failure a caller can act on.

Services raise a subclass of one kind (``LabelError`` is an :class:`Invalid`, ``TaskNotFound`` a
:class:`NotFound`, ``CycleBusy`` a :class:`Conflict`), with a ``message`` that is safe to show the
user and a machine-readable ``code``. They know nothing of HTTP: the API layer maps each kind to a
status in one table (``refrain.api.ERROR_STATUS``), and pages use the same table.

This is a platform module, below every app: it imports nothing from them (nor from Django).
"""

from __future__ import annotations

import math


class ApplicationError(Exception):
    """A request the application refuses or cannot carry out; ``message`` says why."""

    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Invalid(ApplicationError):
    """The input cannot be used as given (unknown labels, a bad setting, a malformed file)."""

    code = "invalid"


class NotFound(ApplicationError):
    """The object does not exist, or the user may not know it does."""

    code = "not_found"


class PermissionDenied(ApplicationError):
    """The user may not do this."""

    code = "permission_denied"


class Conflict(ApplicationError):
    """The object's state does not allow this now (a lease ran out, a cycle is running)."""

    code = "conflict"


class Unavailable(ApplicationError):
    """A service the operation needs cannot be reached or refused the request."""

    code = "unavailable"


class Throttled(ApplicationError):
    """Too many attempts; ``retry_after`` seconds until the lock lifts. The message says so."""

    code = "throttled"

    def __init__(self, *, retry_after: int, what: str = "attempts") -> None:
        self.retry_after = max(1, int(retry_after))
        minutes = math.ceil(self.retry_after / 60)
        super().__init__(
            f"Too many {what}. Try again in {minutes} minute{'s' if minutes != 1 else ''}."
        )
