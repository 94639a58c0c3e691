"""What both HTTP model clients share: client ownership, the POST, and mapping failures to errors.

Every httpx failure and every non-2xx status becomes one of the typed ``ModelError`` subclasses
here, at the boundary, so the engine's retry and fallback policy never sees an httpx type. Each
names the model and the URL called (without query string or credentials). The clients never
retry by themselves: each attempt must be recorded by the engine.

Timeouts, one story: inside an engine, ``Agent.model_timeout`` bounds a whole attempt (the
engine runs it within ``engine_attempt()`` and ``anyio.fail_after``) and a client's ``timeout``
bounds only connecting; used on its own, a client's ``timeout`` bounds each whole request.
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import anyio
import httpx
import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from agentledger.engine._errors import (
    ModelConnectionError,
    ModelError,
    ModelRateLimitedError,
    ModelRequestError,
    ModelResponseError,
    ModelServerError,
    ModelTimeoutError,
)
from agentledger.engine._secrets import redact_secrets

from ._model import Sampling, ToolChoice

_SNIPPET_CHARS = 300
_MESSAGE_CHARS = 600
"""How much of a provider's error message an error quotes: enough to say what is wrong, short
enough to stay one readable line (a server may put a whole traceback there)."""

_ENGINE_ATTEMPT: ContextVar[bool] = ContextVar("agentledger_engine_attempt", default=False)


@contextmanager
def engine_attempt() -> Iterator[None]:
    """Marks a model call as an engine's attempt: the engine bounds it (``Agent.model_timeout``),
    so an HTTP client's own ``timeout`` then bounds only connecting. Used by the engine's loop."""
    token = _ENGINE_ATTEMPT.set(True)
    try:
        yield
    finally:
        _ENGINE_ATTEMPT.reset(token)


def safe_url(url: str | httpx.URL) -> str:
    """``url`` as it may be shown: no user, password, query string or fragment."""
    try:
        parsed = httpx.URL(url)
        return str(parsed.copy_with(username=None, password=None, query=None, fragment=None))
    except (httpx.InvalidURL, TypeError, ValueError):
        # A URL httpx cannot parse (the request then fails as a ModelRequestError) is still
        # shown, cut the same way by hand.
        text = str(url).split("#", 1)[0].split("?", 1)[0]
        return re.sub(r"(?<=://)[^/@]*@", "", text)


def endpoint(base_url: str, path: str) -> str:
    """``path`` appended to ``base_url``'s path, keeping its query (Azure's ``?api-version=``):
    ``endpoint("https://h/v1?x=1", "/chat/completions")`` is ``https://h/v1/chat/completions?x=1``.
    A URL httpx cannot parse is joined as text (the request then fails with a clear error)."""
    try:
        url = httpx.URL(base_url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return base_url.rstrip("/") + path
    return str(url.copy_with(path=url.path.rstrip("/") + path))


class StrictWire(BaseModel):
    """Base of the provider reply shapes: exact JSON types, unknown fields ignored (APIs grow)."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


WireT = TypeVar("WireT", bound=StrictWire)


class HttpModel:
    """Owns or borrows an ``httpx.AsyncClient`` and posts JSON to a provider.

    A client passed in is borrowed and never closed; without one, a client is created and closed by
    ``aclose()`` or on leaving ``async with``. ``timeout``: seconds a whole request may take when
    the client is used on its own; inside an engine, ``Agent.model_timeout`` bounds the attempt
    and ``timeout`` only bounds connecting (see ``engine_attempt``).
    """

    _url: str = ""

    def __init__(self, model: str, *, client: httpx.AsyncClient | None, timeout: float) -> None:
        self._model = model
        self._timeout = timeout
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient(timeout=timeout)

    @property
    def name(self) -> str:
        """The model's name as configured, recorded in events and used for pricing."""
        return self._model

    @property
    def url(self) -> str:
        """The endpoint this client posts to, as errors show it (no query, no credentials)."""
        return safe_url(self._url)

    def check_settings(
        self, tool_choice: ToolChoice, sampling: Sampling, tool_names: tuple[str, ...]
    ) -> None:
        """Raise ``AgentConfigError`` for an agent setting this provider cannot honour (called by
        ``Agent`` for each model of its chain). The base class takes every setting."""

    def _timeouts(self) -> tuple[httpx.Timeout, float | None]:
        """The httpx timeouts of one request, and the seconds the client must bound the whole
        request by (``None`` inside an engine attempt, which the engine bounds)."""
        if _ENGINE_ATTEMPT.get():
            return httpx.Timeout(None, connect=self._timeout), None
        return httpx.Timeout(self._timeout), self._timeout

    def _error(self, cls: type[ModelError], message: str, **kwargs: Any) -> ModelError:
        return cls(self._model, message, url=self.url, **kwargs)

    async def aclose(self) -> None:
        """Close the HTTP client if this object created it; a borrowed client stays open."""
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _post_json(
        self, url: str, headers: Mapping[str, str], body: Mapping[str, Any]
    ) -> httpx.Response:
        """POST ``body`` and return the 2xx response, or raise the matching ``ModelError``."""
        timeouts, total = self._timeouts()
        with self._transport_errors(streaming=False):
            with anyio.fail_after(total):
                response = await self._client.post(
                    url,
                    content=orjson.dumps(body),
                    headers={"content-type": "application/json", "accept": "application/json"}
                    | dict(headers),
                    timeout=timeouts,
                )
        if not response.is_success:
            raise error_for_status(self._model, response, url=self.url)
        return response

    def _parse(self, shape: type[WireT], response: httpx.Response) -> WireT:
        """Validate a 2xx body against the provider's documented reply shape."""
        try:
            return shape.model_validate_json(response.content)
        except ValidationError as exc:
            raise self._error(
                ModelResponseError,
                f"malformed reply: {_summarise(exc, response)}",
                status_code=response.status_code,
            ) from exc

    @asynccontextmanager
    async def _post_stream(
        self, url: str, headers: Mapping[str, str], body: Mapping[str, Any]
    ) -> AsyncIterator[httpx.Response]:
        """POST ``body`` for a server-sent event stream and yield the open 2xx response.

        Leaving the block closes the response, also one not read to its end (the output
        cut-off): httpx then drops the connection rather than reading the rest. A non-2xx
        status raises its ``ModelError`` as ``_post_json`` does, a JSON answer (a server that
        does not stream) a ``ModelRequestError``; so does a transport failure
        while the body is read (a dropped connection, a server closing mid-body), as a
        retryable ``ModelConnectionError`` or ``ModelTimeoutError``. The client's ``timeout``
        bounds each wait for data (a whole stream is the engine's to bound).
        """
        timeouts, _ = self._timeouts()
        with self._transport_errors(streaming=True):
            async with self._client.stream(
                "POST",
                url,
                content=orjson.dumps(body),
                headers={"content-type": "application/json", "accept": "text/event-stream"}
                | dict(headers),
                timeout=timeouts,
            ) as response:
                if not response.is_success:
                    await response.aread()
                    raise error_for_status(self._model, response, url=self.url)
                if response.headers.get("content-type", "").startswith("application/json"):
                    # A server that cannot stream answers whole: trying again will not help.
                    await response.aread()
                    raise self._error(
                        ModelRequestError,
                        f"the server answered JSON, not an event stream: {_snippet(response)!r}",
                        status_code=response.status_code,
                    )
                try:
                    yield response
                except ModelError as exc:
                    # The stream readers raise without the URL (they see only events).
                    if exc.url is None:
                        exc.locate(self.url)
                    raise

    @contextmanager
    def _transport_errors(self, *, streaming: bool) -> Iterator[None]:
        """Every httpx failure of a request as the ``ModelError`` it means, naming the URL."""
        try:
            yield
        except (httpx.TimeoutException, TimeoutError) as exc:
            if isinstance(exc, httpx.ConnectTimeout):
                message = f"could not connect within {self._timeout:g}s ({_describe(exc)})"
            else:
                waited = "no data" if streaming else "no answer"
                message = f"{waited} within {self._timeout:g}s ({_describe(exc)})"
            raise self._error(ModelTimeoutError, message) from exc
        except (
            httpx.UnsupportedProtocol,
            httpx.LocalProtocolError,
            httpx.InvalidURL,
            UnicodeEncodeError,
        ) as exc:
            # The request could not even be formed (bad base URL, a header that is not ASCII
            # such as a pasted key with a typographic quote): a retry sends the same request.
            # ``InvalidURL`` and ``UnicodeEncodeError`` are not ``httpx.HTTPError``s.
            raise self._error(ModelRequestError, _describe(exc)) from exc
        except httpx.TransportError as exc:
            # Streaming, this includes a server closing the connection mid-body.
            broke = "the stream broke off: " if streaming else ""
            raise self._error(ModelConnectionError, broke + _describe(exc)) from exc
        except (httpx.HTTPError, httpx.StreamError, httpx.CookieConflict) as exc:
            # Undecodable content-encoding, redirect loops, and whatever else httpx raises.
            raise self._error(ModelResponseError, _describe(exc)) from exc


def error_for_status(model: str, response: httpx.Response, url: str | None = None) -> ModelError:
    """The typed error for a non-2xx response, carrying the provider's own error message.

    ``url``: the endpoint as errors show it (``safe_url``); a 404 there says whether the
    likely cause is a base URL without ``/v1``.
    """
    status = response.status_code
    said = provider_error_message(response)
    message = f"HTTP {status}: {_clip(said)}"
    request_id = response.headers.get("x-request-id") or response.headers.get("request-id")
    if request_id:
        message += f" (request id {request_id})"
    if status == 404 and url is not None:
        message += _missing_v1_hint(url)
    if status == 429:
        return ModelRateLimitedError(
            model,
            message,
            status_code=status,
            retry_after=retry_after_seconds(response.headers),
            url=url,
        )
    if status == 408:
        # The server gave up waiting for us; like a client-side timeout, trying again may work.
        return ModelTimeoutError(model, message, status_code=status, url=url)
    if status == 500 and (summary := invalid_request_summary(said)) is not None:
        # A server that validates the request body but reports a failed validation as an
        # internal error (llama-cpp-python's server does): sending it again fails again.
        return ModelRequestError(
            model, f"HTTP 500, request rejected as invalid: {summary}", status_code=status, url=url
        )
    if status >= 500:  # includes Anthropic's 529 "overloaded"
        return ModelServerError(model, message, status_code=status, url=url)
    if 400 <= status < 500:
        return ModelRequestError(model, message, status_code=status, url=url)
    # 1xx / 3xx: nothing an API promises for this endpoint (redirects are not followed).
    return ModelResponseError(model, message, status_code=status, url=url)


_VALIDATION_HEAD = re.compile(r"^\s*(?:[\w.-]+: )?(\d+) validation errors?\b")
_VALIDATION_ENTRY = re.compile(
    r"'type': '(?P<type>[a-z_]+)', 'loc': \((?P<loc>[^)]*)\), 'msg': (?P<msg>\"[^\"]*\"|'[^']*')"
)


def invalid_request_summary(message: str) -> str | None:
    """A short account of a pydantic validation of the *request body*, if ``message`` is one.

    The rule is kept narrow on purpose: only a message that starts as pydantic's
    ``"<n> validation error(s)"`` (after the error's type, if any) and names a location in the
    request ``body`` counts, so a
    plain 500 (a crashed worker, an out-of-memory) stays a retryable server error.
    """
    head = _VALIDATION_HEAD.match(message)
    entries = list(_VALIDATION_ENTRY.finditer(message))
    if head is None or not any(e["loc"].startswith("'body'") for e in entries):
        return None
    # With a union (the message roles) pydantic reports every branch; the branch whose field
    # was wrong (not a mismatched role literal, not a field of another branch) says most.
    telling = [e for e in entries if e["type"] not in ("literal_error", "missing")] or entries
    first = telling[0]
    where = ".".join(part.strip().strip("'") for part in first["loc"].split(",")[1:] if part)
    return f"{head[1]} validation errors, e.g. {where}: {first['msg'].strip(chr(34) + chr(39))}"


def _missing_v1_hint(url: str) -> str:
    """For a 404 of a chat completions URL without a version segment: the base URL most likely
    lacks ``/v1`` (OpenAI-compatible servers serve ``/v1/chat/completions``)."""
    parsed = httpx.URL(url)
    suffix = "/chat/completions"
    if not parsed.path.endswith(suffix) or re.search(r"/v\d+[a-z0-9]*/", parsed.path):
        return ""
    base = parsed.copy_with(path=parsed.path[: -len(suffix)] + "/v1")
    return f"; is /v1 missing from the base URL? (try base_url={str(base)!r})"


def provider_error_message(response: httpx.Response) -> str:
    """The error message from a provider's body: ``{"error": {"type", "message"}}`` or kin.

    OpenAI and Anthropic nest ``type``/``message`` under ``error``; some OpenAI-compatible servers
    put a string there, or ``message``/``detail`` at the top. Anything else: a snippet of the body.
    """
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            kind = error.get("type") or error.get("code")
            text = error.get("message")
            if isinstance(text, str):
                return f"{kind}: {text}" if isinstance(kind, str) and kind else text
        if isinstance(error, str):
            return error
        for key in ("message", "detail"):
            if isinstance(body.get(key), str):
                return str(body[key])
    snippet = _snippet(response).strip()
    return snippet or response.reason_phrase or "no body"


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    """How long the provider asks us to wait, in seconds, or ``None`` if it does not say.

    Reads OpenAI's ``retry-after-ms`` first (finer grained), then ``Retry-After`` as delta-seconds
    or an HTTP date. A date is measured against the response's own ``Date`` header, never the
    local clock (which the engine must not read); without ``Date`` it yields ``None``.
    """
    millis = _non_negative_number(headers.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _non_negative_number(value)
    if seconds is not None:
        return seconds
    until = _http_date(value)
    sent = _http_date(headers.get("date"))
    if until is None or sent is None:
        return None
    return max(0.0, (until - sent).total_seconds())


def _non_negative_number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _http_date(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    # "-0000" parses as naive; HTTP dates are always GMT.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _snippet(response: httpx.Response) -> str:
    """The start of a body, for an error's message. Redacted before it is cut: a key cut in
    half would no longer be recognised (``ModelError`` redacts its whole message again)."""
    return redact_secrets(response.text)[:_SNIPPET_CHARS]


def _clip(text: str) -> str:
    """``text`` cut to ``_MESSAGE_CHARS``, redacted first (a key cut in half would no longer be
    recognised), with its line breaks made spaces."""
    text = " ".join(redact_secrets(text).split())
    return text if len(text) <= _MESSAGE_CHARS else text[: _MESSAGE_CHARS - 1] + "…"


def _describe(exc: Exception) -> str:
    detail = str(exc)
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def _summarise(exc: ValidationError, response: httpx.Response) -> str:
    errors = exc.errors(include_url=False)
    first = errors[0]
    if first["type"] == "json_invalid":
        return f"body is not JSON: {_snippet(response)!r}"
    where = ".".join(str(part) for part in first["loc"]) or "body"
    summary = f"{where}: {first['msg']}"
    if len(errors) > 1:
        summary += f" (and {len(errors) - 1} more)"
    # A 2xx carrying an error object (some gateways do this) should still say what went wrong.
    if b'"error"' in response.content:
        summary += f"; provider said {provider_error_message(response)}"
    return summary
