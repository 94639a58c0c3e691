"""``python -m examples.chat_service``: serve the travel desk and print its URL.

python -m examples.chat_service                       # scripted model, no key, no network
python -m examples.chat_service --model qwen2.5-7b-instruct --base-url http://127.0.0.1:8080/v1
"""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

import uvicorn

from agentledger.engine import WIRE_PROFILES

from .app import create_app
from .service import Settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.chat_service", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--db", type=Path, default=Path("chat.db"), help="the SQLite event log")
    parser.add_argument("--model", help="a model of an OpenAI-compatible server (default: demo)")
    parser.add_argument("--base-url", help="that server's URL, e.g. http://127.0.0.1:8080/v1")
    parser.add_argument(
        "--server",
        choices=sorted(WIRE_PROFILES),
        default="openai",
        help="which kind of server it is (how it wants requests)",
    )
    options = parser.parse_args(argv)
    if options.base_url and not options.model:
        parser.error("--base-url needs --model")
    settings = Settings(
        db=options.db, model=options.model, base_url=options.base_url, server=options.server
    )
    listening = socket.create_server((options.host, options.port))
    host, port = listening.getsockname()[:2]
    model = options.model or "the scripted demo model"
    print(f"travel desk on http://{host}:{port}/ ({model}; log in {options.db})", flush=True)
    config = uvicorn.Config(create_app(settings), log_level="warning")
    uvicorn.Server(config).run(sockets=[listening])


if __name__ == "__main__":
    main()
