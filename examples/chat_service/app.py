"""The HTTP face of the chat service (Starlette): a page, a streaming chat endpoint, the log.

- ``GET /``: a small page that chats through ``POST /chat`` and shows the answer as it streams.
- ``POST /chat`` with ``{"message": ..., "conversation_id": ...}`` (the id is optional: without
  it a conversation starts) answers with ``text/event-stream``: ``conversation``, ``delta``,
  ``tool`` and a last ``answer`` (or ``error``) event, each with JSON data.
- ``GET /conversations/{id}``: the conversation's runs as JSON, folded from the log.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .page import PAGE
from .service import ChatEvent, ChatService, Settings, open_service


class ChatRequest(BaseModel):
    """The body of ``POST /chat``."""

    model_config = ConfigDict(extra="forbid")
    message: str = Field(min_length=1, max_length=4000)
    conversation_id: str | None = Field(default=None, min_length=1, max_length=200)


def sse(event: ChatEvent) -> bytes:
    """``event`` as a server-sent event; JSON data keeps newlines of the text off the wire."""
    return b"event: " + event.name.encode() + b"\ndata: " + orjson.dumps(event.data) + b"\n\n"


def create_app(settings: Settings) -> Starlette:
    """The service as an ASGI app; its log, engine and tool server open with the app's
    lifespan."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_service(settings) as service:
            app.state.service = service
            yield

    async def page(request: Request) -> Response:
        return HTMLResponse(PAGE)

    async def chat(request: Request) -> Response:
        try:
            asked = ChatRequest.model_validate_json(await request.body())
        except ValidationError as error:
            return _bad_request(error)
        service: ChatService = request.app.state.service

        async def stream() -> AsyncIterator[bytes]:
            try:
                async for event in service.chat(asked.conversation_id, asked.message):
                    yield sse(event)
            except Exception as error:  # the stream has begun: the client learns it here
                said = str(error).splitlines()[0] if str(error) else ""
                yield sse(ChatEvent("error", {"error": f"{type(error).__name__}: {said}"}))

        headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    async def conversation(request: Request) -> Response:
        service: ChatService = request.app.state.service
        conversation_id = request.path_params["conversation_id"]
        found = await service.conversation(conversation_id)
        if found is None:
            return JSONResponse({"error": f"no conversation {conversation_id!r}"}, 404)
        return JSONResponse(found)

    routes = [
        Route("/", page),
        Route("/chat", chat, methods=["POST"]),
        Route("/conversations/{conversation_id}", conversation),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def _bad_request(error: ValidationError) -> Response:
    first: Any = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return JSONResponse({"error": f"{where}: {first['msg']}"}, 400)
