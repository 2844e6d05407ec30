"""The exception tree of convergent.

Engines raise these typed errors; only the HTTP edge (`convergent.http.problem`) turns them into
status codes. Every error carries a stable ``code`` used as the problem ``type`` suffix.

ConvergentError
├── ConfigurationError            bad settings or URL; the message says how to fix it
│   ├── MissingExtra              an integration's extra is not installed (an ImportError too)
│   └── NotMigrated               the database lacks convergent's tables or is behind
├── StoreUnavailable              the database cannot be reached (HTTP 503)
├── TransientError                worth retrying (timeouts, 5xx, 429); may carry ``retry_after``
├── PermanentError                retrying cannot help (4xx, validation)
├── IdempotencyError
│   ├── InvalidIdempotencyKey     malformed header (400)
│   ├── IdempotencyKeyMissing     a route that requires one got none (400)
│   ├── IdempotencyKeyMismatch    same key, different request (422)
│   └── IdempotencyKeyInProgress  the first request with this key is still running (409)
├── ResourceError
│   ├── NotFound                  (404)
│   ├── AlreadyExists             (409 / 412 for If-None-Match: *)
│   ├── InvalidTransition         the current state does not allow the action (409)
│   ├── StaleVersion              someone else changed it first (412 / 409)
│   ├── PreconditionRequired      a conditional route got no If-Match (428)
│   └── PreconditionFailed        If-Match / If-None-Match did not hold (412)
├── MessagingError
│   ├── SchemaViolation           a payload does not match its topic's schema
│   ├── UnknownTopic
│   └── TransportError            the broker refused or is unreachable (transient)
├── WorkflowError
│   ├── UnknownWorkflow
│   ├── RunNotFound
│   ├── RunNotResumable           resume / retry-step asked of a run in the wrong state (409)
│   ├── RunFailed                 awaited a run that ended failed or cancelled
│   ├── RunCancelled
│   ├── NonDeterminism            a resumed run asked for steps in another order
│   ├── StepFailed                a step failed for good (permanent error or retries exhausted)
│   └── LeaseLost                 another worker took over this run
└── WebhookError
    ├── UnsafeDestination         URL refused by the SSRF guard
    └── SignatureInvalid          verification failed (bad signature or timestamp)
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AlreadyExists",
    "ChildFailed",
    "ConfigurationError",
    "ConvergentError",
    "IdempotencyError",
    "IdempotencyKeyInProgress",
    "IdempotencyKeyMismatch",
    "IdempotencyKeyMissing",
    "InvalidIdempotencyKey",
    "InvalidTransition",
    "LeaseLost",
    "MessagingError",
    "MissingExtra",
    "NonDeterminism",
    "NotFound",
    "NotMigrated",
    "NotSent",
    "PermanentError",
    "PreconditionFailed",
    "PreconditionRequired",
    "ResourceError",
    "RunCancelled",
    "RunFailed",
    "RunNotFound",
    "RunNotResumable",
    "SchemaViolation",
    "SignatureInvalid",
    "StaleVersion",
    "StepFailed",
    "StoreConflict",
    "StoreUnavailable",
    "TransientError",
    "TransportError",
    "UnknownSchedule",
    "UnknownTopic",
    "UnknownWorkflow",
    "UnsafeDestination",
    "WebhookError",
    "WorkflowError",
]


class ConvergentError(Exception):
    """Base of every error raised by convergent."""

    code = "error"

    def __init__(self, message: str = "", **details: Any) -> None:
        super().__init__(message or self.__class__.__doc__ or self.code)
        self.details = details

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code


class ConfigurationError(ConvergentError):
    """The configuration is invalid."""

    code = "configuration"


class MissingExtra(ConfigurationError, ImportError):
    """An optional integration was used without its extra installed."""

    code = "missing_extra"

    def __init__(self, extra: str, what: str) -> None:
        super().__init__(f"{what} needs the {extra!r} extra: pip install 'convergent[{extra}]'")
        self.extra = extra


class NotMigrated(ConfigurationError):
    """The database has no convergent tables, or older ones than this version needs."""

    code = "not-migrated"


class StoreUnavailable(ConvergentError):
    """The database cannot be reached."""

    code = "store-unavailable"


class TransientError(ConvergentError):
    """A failure that may succeed if tried again."""

    code = "transient"

    def __init__(self, message: str = "", *, retry_after: float | None = None, **details: Any):
        super().__init__(message, **details)
        self.retry_after = retry_after


class StoreConflict(TransientError):
    """The database aborted a transaction to settle a conflict with another one (a deadlock, a
    serialization failure). Nothing of the transaction was written: trying again is safe."""

    code = "store-conflict"

    def __init__(self, message: str = "", *, retry_after: float | None = 1.0, **details: Any):
        super().__init__(message, retry_after=retry_after, **details)


class PermanentError(ConvergentError):
    """A failure that will not succeed if tried again."""

    code = "permanent"


# idempotency ---------------------------------------------------------------------------------


class IdempotencyError(ConvergentError):
    code = "idempotency"


class InvalidIdempotencyKey(IdempotencyError):
    """The Idempotency-Key header is malformed."""

    code = "idempotency-key-invalid"


class IdempotencyKeyMissing(IdempotencyError):
    """This route requires an Idempotency-Key header."""

    code = "idempotency-key-missing"


class IdempotencyKeyMismatch(IdempotencyError):
    """The key was already used for a different request."""

    code = "idempotency-key-mismatch"


class IdempotencyKeyInProgress(IdempotencyError):
    """A request with this key is still being processed."""

    code = "idempotency-key-in-progress"

    def __init__(self, message: str = "", *, retry_after: float = 1.0, **details: Any):
        super().__init__(message, **details)
        self.retry_after = retry_after


# resources -----------------------------------------------------------------------------------


class ResourceError(ConvergentError):
    code = "resource"


class NotFound(ResourceError):
    """The resource does not exist."""

    code = "not-found"


class AlreadyExists(ResourceError):
    """The resource already exists."""

    code = "already-exists"


class InvalidTransition(ResourceError):
    """The resource's current state does not allow this action."""

    code = "invalid-transition"


class StaleVersion(ResourceError):
    """The resource was changed by someone else."""

    code = "stale-version"


class PreconditionRequired(ResourceError):
    """This route requires a conditional request (If-Match)."""

    code = "precondition-required"


class PreconditionFailed(ResourceError):
    """A request precondition did not hold."""

    code = "precondition-failed"


# messaging -----------------------------------------------------------------------------------


class MessagingError(ConvergentError):
    code = "messaging"


class SchemaViolation(MessagingError):
    """The payload does not match the topic's schema."""

    code = "schema-violation"


class UnknownTopic(MessagingError):
    """No topic of this name is declared."""

    code = "unknown-topic"


class TransportError(MessagingError, TransientError):
    """The transport failed; the message will be retried."""

    code = "transport"


class NotSent(TransportError):
    """Not sent: an earlier message of its key in the same batch failed, and sending this one
    would let it overtake that message. Not a failed attempt of its own."""

    code = "transport-not-sent"


# workflows -----------------------------------------------------------------------------------


class WorkflowError(ConvergentError):
    code = "workflow"


class UnknownWorkflow(WorkflowError):
    """No workflow of this name is registered."""

    code = "unknown-workflow"


class RunNotFound(WorkflowError):
    """No run with this id."""

    code = "run-not-found"


class RunNotResumable(WorkflowError):
    """The run is not in a state this action applies to; the message says what to do."""

    code = "run-not-resumable"


class RunFailed(WorkflowError):
    """The run ended without success."""

    code = "run-failed"


class RunCancelled(RunFailed):
    """The run was cancelled."""

    code = "run-cancelled"


class NonDeterminism(WorkflowError):
    """A resumed run asked for steps in a different order than it recorded."""

    code = "non-determinism"


class StepFailed(WorkflowError):
    """A step failed for good: a permanent error, or its retries ran out."""

    code = "step-failed"


class ChildFailed(StepFailed):
    """A child run awaited with ``ctx.child`` failed or was cancelled."""

    code = "child-failed"


class UnknownSchedule(WorkflowError):
    """No schedule of this name is in the database."""

    code = "unknown-schedule"


class LeaseLost(WorkflowError):
    """Another worker owns this run now."""

    code = "lease-lost"


# webhooks ------------------------------------------------------------------------------------


class WebhookError(ConvergentError):
    code = "webhook"


class UnsafeDestination(WebhookError):
    """The destination is not allowed (scheme or address)."""

    code = "unsafe-destination"


class SignatureInvalid(WebhookError):
    """The webhook signature or timestamp did not verify."""

    code = "signature-invalid"
