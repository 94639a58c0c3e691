"""The chat service's tool server: a Model Context Protocol server over stdio.

The service starts it as a child process (``python examples/chat_service/mcp_server.py``) and
the engine calls its ``forecast`` tool like any other tool. It answers from a fixed table, so
the example needs no network; a real deployment would call a weather API here.
"""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import MCPServer

FORECASTS: dict[str, tuple[str, int]] = {
    "paris": ("light rain", 18),
    "tokyo": ("clear", 24),
    "oslo": ("snow showers", -2),
    "lisbon": ("sunny", 27),
}


def forecast(city: str) -> dict[str, Any]:
    """Today's forecast for a city: conditions and temperature in °C."""
    conditions, temperature = FORECASTS.get(city.strip().lower(), ("unknown", 0))
    return {"city": city, "conditions": conditions, "temperature_c": temperature}


server = MCPServer("forecasts")
server.tool()(forecast)  # called, not applied as a decorator: the function keeps its types

if __name__ == "__main__":
    server.run("stdio")
