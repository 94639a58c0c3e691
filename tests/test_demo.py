"""``agentledger demo``: scripted without a key and says so; on a real model over HTTP with
``--model`` and ``--base-url`` (a local server answering with recorded provider bodies); a
``--model`` it cannot reach is one line, not a traceback."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from llama_like_server import llama_like_server
from wire_server import recorded_provider

from agentledger.engine.cli import main
from agentledger.engine.cli._demo import DemoModelError, demo_setup


@pytest.fixture(autouse=True)
def _no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def test_the_scripted_demo_says_so_and_shows_each_pattern(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    began = time.perf_counter()
    assert main(["--db", str(tmp_path / "demo.db"), "demo"]) == 0
    took = time.perf_counter() - began
    out = capsys.readouterr().out
    assert "Model: scripted model (no API key)" in out
    for marker in (
        "tool_arguments_rejected",  # pattern 1
        "tool_tier_failed",  # pattern 4: the primary tier is down, the cache answers
        "budget_reserved",  # pattern 5
        "revision_requested",  # pattern 6
        "tool_result_reused",  # pattern 7, in run 2
    ):
        assert marker in out, marker
    assert "Emails sent: 1; sends answered from the idempotency ledger instead: 1." in out
    assert "Spend: run 1 $0.00002250, run 2 $0.00002250; ada today $0.00004500 settled" in out
    assert "Replay of run 1 from its log: identical" in out
    # The fork under the changed prompt answers in Fahrenheit; its send is not made again.
    assert "  -Your Lisbon itinerary is in your inbox. Expect sun, 24°C." in out
    assert "  +Your Lisbon itinerary is in your inbox. Expect sun, 75°F." in out
    assert "its email send was reused, not sent again." in out
    assert "Trace of run 1 from its log: 10 OpenTelemetry spans (5 chat, 3 execute_tool" in out
    assert "  10 spans exported through the OpenTelemetry SDK" in out
    assert took < 10, f"the demo took {took:.1f} s"  # under 1 s here; generous for CI


def test_without_the_otel_extra_the_demo_says_the_trace_is_not_exported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if opentelemetry-sdk were not installed: importing it raises ImportError.
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace.export.in_memory_span_exporter", None)
    assert main(["--db", str(tmp_path / "demo.db"), "demo"]) == 0
    out = capsys.readouterr().out
    assert "Trace of run 1 from its log: 10 OpenTelemetry spans" in out
    assert "Not exported: the 'otel' extra is not installed" in out


def test_the_demo_runs_on_a_real_model_at_a_base_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with recorded_provider() as (url, asked):
        db = str(tmp_path / "demo.db")
        argv = ["--db", db, "demo", "--model", "smollm2-135m", "--base-url", f"{url}/v1"]
        assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"Model: smollm2-135m at {url}/v1 (openai wire format)" in out
    assert "no listed price, counted as $0" in out
    assert "scripted" not in out
    assert asked, "no request reached the server"
    assert {path for path, _ in asked} == {"/v1/chat/completions"}
    assert {body["model"] for _, body in asked} == {"smollm2-135m"}
    # The recorded replies call get_weather for Paris and Tokyo, then answer from the results.
    assert "get_weather tier cached_forecast ok" in out
    assert "Tokyo: it is clear and 24 °C" in out
    assert "Replay of run 1 from its log: identical" in out


def test_the_demo_runs_on_a_llama_cpp_server_with_its_wire_profile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # That server answers HTTP 500 to OpenAI's "content": null in an assistant tool turn.
    with llama_like_server() as (url, bodies):
        db = str(tmp_path / "demo.db")
        argv = [
            "--db",
            db,
            "demo",
            "--model",
            "smollm2",
            "--base-url",
            url,
            "--server",
            "llama.cpp",
        ]
        assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"Model: smollm2 at {url} (openai wire format, llama.cpp server)" in out
    assert "Replay of run 1 from its log: identical" in out
    tool_turns = [
        m for b in bodies for m in b["messages"] if m["role"] == "assistant" and m.get("tool_calls")
    ]
    assert tool_turns and all(m["content"] == "" for m in tool_turns)
    assert all("max_tokens" in b and "max_completion_tokens" not in b for b in bodies)


def test_a_model_without_key_or_base_url_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "demo.db"
    assert main(["--db", str(db), "demo", "--model", "gpt-4o-mini"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--model gpt-4o-mini needs $OPENAI_API_KEY (or --base-url URL" in err
    assert not db.exists()  # checked before the log is opened


def test_which_model_the_options_name() -> None:
    keys = {"OPENAI_API_KEY": "sk-test", "ANTHROPIC_API_KEY": "sk-ant-test"}
    assert demo_setup(None, environ={}).label.startswith("scripted model (no API key)")
    assert demo_setup(None, environ=keys).label.startswith("scripted model (no --model given)")
    claude = demo_setup("claude-3-5-haiku-latest", environ=keys)
    assert claude.label.startswith("claude-3-5-haiku-latest at Anthropic's API")
    assert claude.prices == {}  # listed in genai-prices
    with pytest.raises(DemoModelError, match=r"needs \$ANTHROPIC_API_KEY"):
        demo_setup("claude-3-5-haiku-latest", environ={"OPENAI_API_KEY": "sk-test"})
    with pytest.raises(DemoModelError, match="need --model"):
        demo_setup(None, base_url="http://127.0.0.1:1/v1", environ={})
