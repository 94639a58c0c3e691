"""What both HTTP model clients share: client ownership, the POST, and mapping failures to errors.

Every httpx failure and every non-2xx status becomes one of the typed ``ModelError`` subclasses
here, at the boundary, so the engine's retry and fallback policy never sees an httpx type. The
clients never retry by themselves: each attempt must be recorded by the engine.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Self, TypeVar

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

_SNIPPET_CHARS = 300


class StrictWire(BaseModel):
    """Base of the provider reply shapes: exact JSON types, unknown fields ignored (APIs grow)."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


WireT = TypeVar("WireT", bound=StrictWire)


class HttpModel:
    """Owns or borrows an ``httpx.AsyncClient`` and posts JSON to a provider.

    A client passed in is borrowed and never closed; without one, a client is created and closed by
    ``aclose()`` or on leaving ``async with``.
    """

    def __init__(self, model: str, *, client: httpx.AsyncClient | None, timeout: float) -> None:
        self._model = model
        self._timeout = timeout
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient(timeout=timeout)

    @property
    def name(self) -> str:
        """The model's name as configured, recorded in events and used for pricing."""
        return self._model

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
        try:
            response = await self._client.post(
                url,
                content=orjson.dumps(body),
                headers={"content-type": "application/json", "accept": "application/json"}
                | dict(headers),
                timeout=self._timeout,
            )
        except httpx.TimeoutException as exc:
            raise ModelTimeoutError(
                self._model, f"no answer within {self._timeout:g}s ({_describe(exc)})"
            ) from exc
        except (
            httpx.UnsupportedProtocol,
            httpx.LocalProtocolError,
            httpx.InvalidURL,
            UnicodeEncodeError,
        ) as exc:
            # The request could not even be formed (bad base URL, a header that is not ASCII
            # such as a pasted key with a typographic quote): a retry sends the same request.
            # ``InvalidURL`` and ``UnicodeEncodeError`` are not ``httpx.HTTPError``s.
            raise ModelRequestError(self._model, _describe(exc)) from exc
        except httpx.TransportError as exc:
            raise ModelConnectionError(self._model, _describe(exc)) from exc
        except (httpx.HTTPError, httpx.StreamError, httpx.CookieConflict) as exc:
            # Undecodable content-encoding, redirect loops, and whatever else httpx raises.
            raise ModelResponseError(self._model, _describe(exc)) from exc
        if not response.is_success:
            raise error_for_status(self._model, response)
        return response

    def _parse(self, shape: type[WireT], response: httpx.Response) -> WireT:
        """Validate a 2xx body against the provider's documented reply shape."""
        try:
            return shape.model_validate_json(response.content)
        except ValidationError as exc:
            raise ModelResponseError(
                self._model,
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
        retryable ``ModelConnectionError`` or ``ModelTimeoutError``.
        """
        try:
            async with self._client.stream(
                "POST",
                url,
                content=orjson.dumps(body),
                headers={"content-type": "application/json", "accept": "text/event-stream"}
                | dict(headers),
                timeout=self._timeout,
            ) as response:
                if not response.is_success:
                    await response.aread()
                    raise error_for_status(self._model, response)
                if response.headers.get("content-type", "").startswith("application/json"):
                    # A server that cannot stream answers whole: trying again will not help.
                    await response.aread()
                    raise ModelRequestError(
                        self._model,
                        f"the server answered JSON, not an event stream: {_snippet(response)!r}",
                        status_code=response.status_code,
                    )
                yield response
        except httpx.TimeoutException as exc:
            raise ModelTimeoutError(
                self._model, f"no data within {self._timeout:g}s ({_describe(exc)})"
            ) from exc
        except (
            httpx.UnsupportedProtocol,
            httpx.LocalProtocolError,
            httpx.InvalidURL,
            UnicodeEncodeError,
        ) as exc:
            raise ModelRequestError(self._model, _describe(exc)) from exc
        except httpx.TransportError as exc:
            # Includes a server closing the connection mid-body (RemoteProtocolError).
            raise ModelConnectionError(
                self._model, f"the stream broke off: {_describe(exc)}"
            ) from exc
        except (httpx.HTTPError, httpx.StreamError, httpx.CookieConflict) as exc:
            raise ModelResponseError(self._model, _describe(exc)) from exc


def error_for_status(model: str, response: httpx.Response) -> ModelError:
    """The typed error for a non-2xx response, carrying the provider's own error message."""
    status = response.status_code
    message = f"HTTP {status}: {provider_error_message(response)}"
    request_id = response.headers.get("x-request-id") or response.headers.get("request-id")
    if request_id:
        message += f" (request id {request_id})"
    if status == 429:
        return ModelRateLimitedError(
            model, message, status_code=status, retry_after=retry_after_seconds(response.headers)
        )
    if status == 408:
        # The server gave up waiting for us; like a client-side timeout, trying again may work.
        return ModelTimeoutError(model, message, status_code=status)
    if status >= 500:  # includes Anthropic's 529 "overloaded"
        return ModelServerError(model, message, status_code=status)
    if 400 <= status < 500:
        return ModelRequestError(model, message, status_code=status)
    # 1xx / 3xx: nothing an API promises for this endpoint (redirects are not followed).
    return ModelResponseError(model, message, status_code=status)


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
