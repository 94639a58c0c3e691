"""An end-to-end example: a chat service that streams an agent's answer to the browser.

A Starlette app (``app.py``) over the engine (``service.py``): each message of a conversation is
a run whose text streams to the client as server-sent events, with the calls of a tool served by
an MCP server (``mcp_server.py``) and a structured answer (``answer.py``), all recorded in a
SQLite event log. ``python -m examples.chat_service`` starts it; see README.md beside this file.
"""

from .answer import TravelAnswer
from .app import create_app
from .service import ChatEvent, ChatService, Settings, open_service

__all__ = ["ChatEvent", "ChatService", "Settings", "TravelAnswer", "create_app", "open_service"]
