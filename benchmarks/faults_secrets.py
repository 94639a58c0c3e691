"""Secrets: canaries of every kind planted through every path of a run never reach disk or output.

Each run gets fresh canaries (drawn from a seeded generator) of every kind the engine redacts
by default: OpenAI, Anthropic, AWS (key id and secret key), GitHub, Google, Slack, Stripe and
Hugging Face keys, ``Authorization: Bearer`` and ``Basic`` credentials, a password in a URL and
a PEM private key. They are planted through every path a text takes into a run: the task, the
system prompt, a model's tool call arguments, a side-effecting tool's arguments and result (its
idempotency ledger), a tool's result, a tool's exception text, a provider's 401 body echoing the
API key (an ``OpenAIChatModel`` over ``httpx.MockTransport``, answering with OpenAI's error
shape) and the model's final answer.

Then every byte is searched: the SQLite file, its ``-wal`` and ``-shm`` (while the store is
open, and the file again after it closed), the JSON-lines sink's file, the output of the CLI's
``runs``, ``show`` (every run) and ``tail`` (the log as JSON lines, the export), the request
bodies the provider received after the task was recorded, and the errors raised to the caller
(a ``ModelError`` from the client used directly, and each run's ``RunResult.error``).

Counted: canaries planted; canaries found anywhere (0); redaction markers in the exported log,
per kind (every kind must show up, so a run that planted nothing cannot pass).

    python benchmarks/faults_secrets.py [--quick] [--seed N] [--off] [--json]

``--off`` runs the same with ``Engine(redaction=None)``: the canaries are then found, which is
what shows the search can fail.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import random
import re
import string
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
from pydantic import BaseModel

from agentledger.engine import (
    Agent,
    BreakerPolicy,
    Engine,
    JsonLinesSink,
    ModelError,
    ModelReply,
    ModelRequest,
    OpenAIChatModel,
    ToolContext,
    tool,
)
from agentledger.engine.cli import main as cli
from agentledger.engine.testing import ScriptedModel, call, reply
from agentledger.events import SqliteEventStore

_B62 = string.ascii_letters + string.digits
_B64 = _B62 + "+/"


def _draw(rng: random.Random, alphabet: str, n: int) -> str:
    # A digit and a capital in every canary: what a real random key has (the detectors for
    # "sk-" and a free-standing "Bearer" ask for one of them, to spare prose).
    body = [rng.choice(alphabet) for _ in range(n - 2)]
    return "".join(body) + rng.choice(string.digits) + rng.choice(string.ascii_uppercase)


@dataclass(frozen=True)
class Canary:
    """One secret (``secret``, searched for) as it is written in text (``planted``)."""

    kind: str
    secret: str
    planted: str


def _canaries(rng: random.Random) -> list[Canary]:
    """One fresh canary of every kind."""
    aws_id = "AKIA" + "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(16))
    aws_secret = _draw(rng, _B64, 40)
    token = _draw(rng, _B62 + "-._", 40)
    user_pass = f"svc-{_draw(rng, _B62, 6)}:{_draw(rng, _B62, 14)}"
    basic = base64.b64encode(user_pass.encode()).decode()
    password = _draw(rng, _B62 + "!*-_~", 18)
    pem_lines = [_draw(rng, _B64, 64) for _ in range(3)]
    pem = (
        "-----BEGIN RSA PRIVATE KEY-----\n"
        + "\n".join(pem_lines)
        + "\n-----END RSA PRIVATE KEY-----"
    )
    keys = {
        "openai_key": "sk-proj-" + _draw(rng, _B62 + "-_", 64),
        "anthropic_key": "sk-ant-api03-" + _draw(rng, _B62 + "-_", 80),
        "github_token": "ghp_" + _draw(rng, _B62, 36),
        "google_api_key": "AIza" + _draw(rng, _B62 + "-_", 35),
        "slack_token": f"xoxb-{rng.randrange(10**11, 10**12)}-" + _draw(rng, _B62, 24),
        "stripe_key": "sk_live_" + _draw(rng, _B62, 32),
        "huggingface_token": "hf_" + _draw(rng, _B62, 34),
    }
    found = [
        Canary(kind, secret, f"{kind.split('_')[0]} key {secret}") for kind, secret in keys.items()
    ]
    return [
        *found,
        Canary("aws_access_key_id", aws_id, f"aws_access_key_id={aws_id}"),
        Canary("aws_secret_key", aws_secret, f"aws_secret_access_key={aws_secret}"),
        Canary("bearer_token", token, f"Authorization: Bearer {token}"),
        Canary("basic_auth", basic, f"Authorization: Basic {basic}"),
        Canary("url_password", password, f"postgres://svc:{password}@db.internal:5432/app"),
        Canary("private_key", pem_lines[1], pem),
    ]


KINDS = tuple(c.kind for c in _canaries(random.Random(0)))

PATHS = (
    "task",
    "system_prompt",
    "tool_arguments",
    "side_effect_arguments",
    "side_effect_result",
    "tool_result",
    "tool_exception",
    "provider_401_body",
    "model_answer",
)


@dataclass
class Plants:
    """The canaries of one run, per path, and the texts that carry them."""

    by_path: dict[str, list[Canary]]

    def text(self, path: str) -> str:
        return "Notes: " + "; ".join(c.planted for c in self.by_path[path]) + ". End."

    def secrets(self) -> list[str]:
        return [c.secret for canaries in self.by_path.values() for c in canaries]


class Query(BaseModel):
    query: str


class Note(BaseModel):
    note: str


class Dsn(BaseModel):
    dsn: str


@dataclass
class Scenario:
    """What one run plants, and what it saw."""

    plants: Plants
    provider_bodies: list[bytes] = field(default_factory=list)

    def agent(self, index: int) -> Agent:
        plants = self.plants

        @tool
        async def lookup(args: Query, ctx: ToolContext) -> dict[str, str]:
            """Look something up."""
            return {"answer": plants.text("tool_result")}

        @tool(side_effect=True)
        async def save_note(args: Note, ctx: ToolContext) -> dict[str, str]:
            """Save a note."""
            return {"saved": plants.text("side_effect_result")}

        @tool
        async def connect(args: Dsn, ctx: ToolContext) -> dict[str, str]:
            """Connect to a database."""
            raise RuntimeError("could not connect: " + plants.text("tool_exception"))

        def script(request: ModelRequest) -> ModelReply:
            if not any(m.role == "tool" for m in request.messages):
                return reply(
                    tool_calls=[
                        call("lookup", {"query": plants.text("tool_arguments")}, id="c1"),
                        call("save_note", {"note": plants.text("side_effect_arguments")}, id="c2"),
                        call("connect", {"dsn": "postgres://db.internal/app"}, id="c3"),
                    ]
                )
            return reply(plants.text("model_answer"))

        return Agent(
            name=f"secrets-{index}",
            model=self._openai(),
            fallback_models=[ScriptedModel(script, name="backup")],
            system_prompt="You help. " + plants.text("system_prompt"),
            tools=[lookup, save_note, connect],
            # The failing tool must fail every time, not be skipped by its breaker.
            breaker=BreakerPolicy(threshold=10_000),
        )

    def _openai(self) -> OpenAIChatModel:
        key = self.plants.by_path["provider_401_body"][0].secret
        assert key.startswith("sk-proj-")
        return OpenAIChatModel(
            "gpt-4o-mini", api_key=key, client=httpx.AsyncClient(transport=self.transport())
        )

    def transport(self) -> httpx.MockTransport:
        """OpenAI answering a bad key: 401 with its error body, the key echoed in the message
        (as a proxy or a self-hosted gateway may do in full) and every other canary after it."""
        extra = self.plants.text("provider_401_body")

        def handle(request: httpx.Request) -> httpx.Response:
            self.provider_bodies.append(request.content)
            sent = request.headers["authorization"].removeprefix("Bearer ")
            body = {
                "error": {
                    "message": f"Incorrect API key provided: {sent}. You can find your API key "
                    f"at https://platform.openai.com/account/api-keys. {extra}",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "invalid_api_key",
                }
            }
            return httpx.Response(401, json=body, headers={"x-request-id": "req_401"})

        return httpx.MockTransport(handle)


def _plants(rng: random.Random) -> Plants:
    by_path = {path: _canaries(rng) for path in PATHS}
    # The provider's canary of the openai kind is the API key the client sends.
    by_path["provider_401_body"].sort(key=lambda c: c.kind != "openai_key")
    return Plants(by_path)


def _cli(argv: Sequence[str]) -> bytes:
    """What the CLI prints for ``argv`` (text and binary output alike)."""
    buffer = io.BytesIO()
    out = io.TextIOWrapper(buffer, encoding="utf-8", write_through=True)
    with contextlib.redirect_stdout(out):
        code = cli(list(argv))
        out.flush()
    if code != 0:
        raise RuntimeError(f"agentledger {' '.join(argv)} exited with {code}")
    return buffer.getvalue()


def _files(workdir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(workdir.iterdir()) if p.is_file()}


async def _drive(
    workdir: Path, scenarios: list[Scenario], redact: bool
) -> tuple[list[str], dict[str, bytes], list[str]]:
    """Run every scenario on one SQLite file; the files as they are while the store is open,
    and the errors the caller saw."""
    db = workdir / "runs.db"
    errors: list[str] = []
    run_ids: list[str] = []
    with (workdir / "sink.jsonl").open("wb") as sink_file:
        options: dict[str, Any] = {} if redact else {"redaction": None}
        sink = JsonLinesSink(sink_file)
        async with SqliteEventStore(db) as store, Engine(store, sink=sink, **options) as engine:
            for index, scenario in enumerate(scenarios):
                task = "Please help. " + scenario.plants.text("task")
                result = await engine.run(scenario.agent(index), task, user_id=f"user-{index}")
                run_ids.append(result.run_id)
                errors.append(str(result.error or ""))
                # The client used directly: the error raised to a caller.
                async with scenario.agent(index).model as model:  # type: ignore[attr-defined]
                    try:
                        await model.complete(ModelRequest(messages=[]))
                    except ModelError as exc:
                        errors.append(str(exc))
            sink_file.flush()
            open_files = _files(workdir)
    return run_ids, open_files, errors


def measure(workdir: Path, *, runs: int, seed: int, redact: bool = True) -> dict[str, Any]:
    """Plant, run, search; the figure as a dict (see the module docstring)."""
    started = time.perf_counter()
    rng = random.Random(seed)
    scenarios = [Scenario(_plants(rng)) for _ in range(runs)]
    run_ids, open_files, errors = anyio.run(_drive, workdir, scenarios, redact)
    db = str(workdir / "runs.db")
    outputs: dict[str, bytes] = {
        "cli runs": _cli(["--db", db, "runs", "--limit", str(runs + 10)]),
        "cli tail": _cli(["--db", db, "tail"]),
        "cli show": b"".join(_cli(["--db", db, "show", run_id]) for run_id in run_ids),
    }
    places: dict[str, bytes] = {
        **{f"open {name}": data for name, data in open_files.items()},
        **{f"closed {name}": data for name, data in _files(workdir).items()},
        **outputs,
        "provider request bodies": b"".join(b for s in scenarios for b in s.provider_bodies),
        "errors raised": "\n".join(errors).encode(),
    }
    found: Counter[str] = Counter()
    found_kinds: Counter[str] = Counter()
    planted = 0
    for scenario in scenarios:
        for path, canaries in scenario.plants.by_path.items():
            for canary in canaries:
                planted += 1
                needle = canary.secret.encode()
                where = [place for place, data in places.items() if needle in data]
                for place in where:
                    found[place] += 1
                if where:
                    found_kinds[f"{path}/{canary.kind}"] += 1
    markers = Counter(
        m.decode() for m in re.findall(rb"\[REDACTED:([a-z0-9_]+)\]", outputs["cli tail"])
    )
    return {
        "benchmark": "faults_secrets",
        "redaction": "on" if redact else "off",
        "seed": seed,
        "runs": runs,
        "kinds": len(KINDS),
        "paths": list(PATHS),
        "places_searched": sorted(places),
        "canaries_planted": planted,
        "canaries_found": sum(found_kinds.values()),
        "found_by_place": dict(sorted(found.items())),
        "leaks_by_path_and_kind": dict(sorted(found_kinds.items())[:20]),
        "markers_in_export": sum(markers.values()),
        "markers_by_kind": dict(sorted(markers.items())),
        "kinds_without_markers": sorted(set(KINDS) - set(markers)),
        "seconds": round(time.perf_counter() - started, 2),
        "python": sys.version.split()[0],
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs, for a smoke check")
    parser.add_argument("--seed", type=int, default=None, help="default: a random one")
    parser.add_argument("--off", action="store_true", help="run with redaction=None")
    parser.add_argument("--json", action="store_true", help="print one JSON object (the default)")
    options = parser.parse_args(argv)
    seed = options.seed if options.seed is not None else random.SystemRandom().randrange(2**32)
    with tempfile.TemporaryDirectory() as tmp:
        return measure(
            Path(tmp), runs=5 if options.quick else 40, seed=seed, redact=not options.off
        )


if __name__ == "__main__":
    print(json.dumps(main()))
