"""The error tree of ``agentledger.engine``."""

from __future__ import annotations

import re
from datetime import datetime

from ._secrets import redact_secrets

_LINE_BREAKS = re.compile(r"\s*[\r\n]+\s*")


class EngineError(Exception):
    """Raised for any engine failure that reaches the caller (the root of this tree)."""


class RunConflictError(EngineError):
    """Raised when another engine appended to the run meanwhile (it is driven elsewhere)."""


class RunExistsError(EngineError):
    """Raised when a new run is given the id of a run already in the store (use ``resume``)."""


class RunActiveError(EngineError):
    """Raised when a run is run or resumed while this engine is already driving it."""


class RunBusyError(EngineError):
    """Raised when a run is resumed while a side effect of it may still be running elsewhere.

    ``retry_at`` is when that side effect's time runs out; resuming after it is safe (the side
    effect is then in doubt, and settled by its reconcile hook or re-run or reported unknown).
    """

    def __init__(self, message: str, *, retry_at: datetime) -> None:
        self.retry_at = retry_at
        super().__init__(message)


class RunParkedError(EngineError):
    """Raised when a run cannot be loaded or driven because an event it depends on is damaged.

    The run is *parked*: nothing more is written to it until the damaged row is repaired (from a
    backup, or by hand). ``stream_id``, ``version`` and ``position`` name the damaged event (in
    the run's own stream, or one it reads, such as its user's budget ledger); ``reason`` says
    what is wrong with it. Other runs are not affected.
    """

    def __init__(
        self, run_id: str, stream_id: str, version: int, position: int | None, reason: str
    ) -> None:
        self.run_id = run_id
        self.stream_id = stream_id
        self.version = version
        self.position = position
        self.reason = reason
        where = "" if position is None else f" (position {position})"
        super().__init__(
            f"run {run_id!r} is parked: event {stream_id!r}@{version}{where} is corrupt: {reason}"
        )


class InvalidInputError(EngineError, ValueError):
    """Raised when an argument of the engine's API cannot be used: an empty id, a NUL character,
    text that is not valid Unicode, a task over the size limit."""


class AgentConfigError(EngineError, ValueError):
    """Raised when an ``Agent`` or one of its policies is built with settings that cannot work."""


class ModelError(EngineError):
    """Raised when a model call fails; ``retryable`` says whether trying again may help.

    Its message often quotes the provider's reply (a 401's body may echo the API key), so the
    built-in secret detectors run over it here, for every client, whatever the engine's
    ``redaction``: a credential in an error message is never of use to the reader.

    ``url`` is the endpoint an HTTP client called (without query string or credentials); the
    message then reads ``"<model> at <url>: <what went wrong>"``, on one line.
    """

    retryable: bool = False

    def __init__(
        self, model: str, message: str, *, status_code: int | None = None, url: str | None = None
    ) -> None:
        self.model = model
        self.status_code = status_code
        self.url = url
        self.detail = message  # what went wrong, without the model and URL in front
        super().__init__(_model_error_text(model, message, url))

    def locate(self, url: str) -> None:
        """Name ``url`` in this error, raised where the URL was not known (a stream reader's)."""
        self.url = url
        self.args = (_model_error_text(self.model, self.detail, url),)


def _model_error_text(model: str, message: str, url: str | None) -> str:
    where = f"{model} at {url}" if url else model
    # Redacted before the lines are joined: a PEM block is recognised by its line breaks.
    return _LINE_BREAKS.sub(" ", redact_secrets(f"{where}: {message}"))


class ModelRateLimitedError(ModelError):
    """Raised on HTTP 429; ``retry_after`` is the provider's ``Retry-After`` in seconds, if any."""

    retryable = True

    def __init__(
        self,
        model: str,
        message: str,
        *,
        status_code: int | None = 429,
        retry_after: float | None = None,
        url: str | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(model, message, status_code=status_code, url=url)


class ModelServerError(ModelError):
    """Raised on HTTP 5xx (and 529 overloaded) from the provider."""

    retryable = True


class ModelTimeoutError(ModelError):
    """Raised when the provider did not answer within the call's timeout."""

    retryable = True


class ModelConnectionError(ModelError):
    """Raised when the provider could not be reached (DNS, refused, reset)."""

    retryable = True


class ModelResponseError(ModelError):
    """Raised when the provider's reply is not what its API promises (malformed body)."""

    retryable = True


class ModelRequestError(ModelError):
    """Raised on a 4xx other than 429 (or a 500 whose body says the request is invalid): the
    request itself is wrong; retrying cannot help."""


class UnknownPriceError(EngineError):
    """Raised when a model has no known price: no override, no declared price, not in the table."""

    def __init__(self, model: str, message: str) -> None:
        self.model = model
        super().__init__(message)


class UnknownSurfaceError(EngineError):
    """Raised when a run names a surface that has no budget policy and there is no default."""

    def __init__(self, surface: str, known: tuple[str, ...]) -> None:
        self.surface = surface
        self.known = known
        names = ", ".join(repr(name) for name in known) or "none"
        super().__init__(f"no budget policy for surface {surface!r} (configured: {names})")


def model_error_class(name: str) -> type[ModelError]:
    """The ``ModelError`` subclass recorded under ``name`` (``ModelError`` if none is)."""
    classes: list[type[ModelError]] = [ModelError]
    while classes:
        cls = classes.pop()
        if cls.__name__ == name:
            return cls
        classes.extend(cls.__subclasses__())
    return ModelError


class ConversationError(EngineError):
    """Raised when a run cannot continue the conversation it names (the root of these)."""


class ConversationBusyError(ConversationError):
    """Raised when a run would continue a conversation whose last run has not ended."""


class ConversationConflictError(ConversationError):
    """Raised when a run would continue a conversation another run continued first, or a run
    that is not the conversation's last, or names a conversation its followed run is not of."""


class ConversationNotFoundError(ConversationError):
    """Raised when a conversation id, or the run a run follows, names nothing in the store."""
