"""One line about one event: what a person reading a timeline needs from it.

Errors are given in full (a failure's message is the answer to "why"); only what the model or a
tool produced (replies, results) is clipped, since ``show --context`` and ``--json`` hold it all.
"""

from __future__ import annotations

from decimal import Decimal

import orjson

from agentledger.events import Event

_CLIP = 120


def clip(value: str, limit: int = _CLIP) -> str:
    """``value`` cut to ``limit`` characters, saying how long it was."""
    return value if len(value) <= limit else f"{value[:limit]}... ({len(value):,} chars)"


def _json(value: object) -> str:
    return orjson.dumps(value, default=str).decode()


def money(amount: Decimal) -> str:
    """An amount of USD as it is recorded (exact), with its unit."""
    return f"${amount}"


def millis(ms: float) -> str:
    """A duration in milliseconds, short."""
    return f"{ms:,.0f} ms" if ms >= 10 else f"{ms:.1f} ms"


def _reply(event: Event) -> str:
    assert event.type == "model_call_responded"
    calls = ", ".join(f"{c.name}({clip(c.arguments, 60)})" for c in event.tool_calls)
    said = f"calls {calls}" if calls else repr(clip(event.text))
    usage = event.usage
    return (
        f"{event.model} replied: {said}; {usage.input_tokens:,}+{usage.output_tokens:,} tokens, "
        f"{money(event.cost_usd)}, {millis(event.duration_ms)}"
    )


def _model_failed(event: Event) -> str:
    assert event.type == "model_call_failed"
    extra = [f"HTTP {event.status_code}"] if event.status_code is not None else []
    if event.retry_after_s is not None:
        extra.append(f"retry after {event.retry_after_s:g} s")
    if event.retryable is not None:
        extra.append("retryable" if event.retryable else "not retryable")
    tail = f" ({', '.join(extra)})" if extra else ""
    return (
        f"{event.model} attempt {event.attempt} failed after {millis(event.duration_ms)}: "
        f"{event.error_type}: {event.message}{tail}"
    )


def detail(event: Event) -> str:
    """The line shown for ``event`` in a timeline (after its version and type)."""
    match event.type:
        case "run_started":
            fork = (
                f"; forked from {event.forked_from} at v{event.forked_at_version}"
                if event.forked_from
                else ""
            )
            convo = (
                f"; conversation {event.conversation_id}"
                + (f" after {event.follows}" if event.follows else "")
                if event.conversation_id
                else ""
            )
            return (
                f"{event.agent} on {event.model} for {event.user_id} ({event.surface}): "
                f"{clip(event.task)!r}{fork}{convo}"
            )
        case "turn_started":
            return f"turn {event.turn}"
        case "run_completed":
            flagged = " (flagged: the critic never accepted it)" if event.flagged else ""
            return f"{clip(event.output)!r}{flagged}; {money(event.cost_usd)}"
        case "run_failed":
            return f"{event.error_type}: {event.message}"
        case "run_cancelled":
            return event.reason or "cancelled"
        case "run_paused":
            calls = f" (calls {', '.join(event.call_ids)})" if event.call_ids else ""
            return f"{event.reason}{calls}"
        case "run_resumed":
            return event.reason or "a new session"
        case "model_call_requested":
            return f"{event.model} attempt {event.attempt}, {event.message_count} messages" + (
                f", max {event.max_tokens} tokens" if event.max_tokens else ""
            )
        case "model_call_responded":
            return _reply(event)
        case "model_call_failed":
            return _model_failed(event)
        case "model_call_interrupted":
            return f"{event.model} attempt {event.attempt}: its session stopped; asked again"
        case "model_call_retried":
            return f"retry {event.model} as attempt {event.attempt} in {event.delay_s:g} s"
        case "model_fell_back":
            return f"fell back from {event.from_model} to {event.to_model}: {event.reason}"
        case "tool_arguments_rejected":
            issues = "; ".join(
                (".".join(str(p) for p in e.loc) + ": " if e.loc else "") + e.message
                for e in event.errors
            )
            return f"{event.tool_name}: {event.error_type}: {issues}"
        case "tool_call_intended":
            key = f" key {event.idempotency_key[:12]}" if event.idempotency_key else ""
            return f"{event.tool_name}({clip(_json(event.arguments), 80)}){key}"
        case "tool_call_claimed":
            return f"{event.tool_name}: in doubt after a crash, claimed to {event.method}"
        case "tool_call_reconciled":
            return f"{event.tool_name}: reconcile hook found {event.found} {event.message}".rstrip()
        case "tool_call_succeeded":
            return (
                f"{event.tool_name} tier {event.tier} ok in {millis(event.duration_ms)}: "
                f"{clip(_json(event.result), 80)}"
            )
        case "tool_tier_failed":
            return (
                f"{event.tool_name} tier {event.tier} failed after {millis(event.duration_ms)}: "
                f"{event.error_type}: {event.message}"
            )
        case "tool_tier_skipped":
            return (
                f"{event.tool_name} tier {event.tier} skipped: breaker open until "
                f"{event.until:%H:%M:%S} ({event.failures_in_a_row} failures in a row)"
            )
        case "tool_call_degraded":
            return (
                f"{event.tool_name}: every tier failed ({', '.join(event.tiers)}) {event.message}"
            )
        case "tool_result_reused":
            origin = f" (from run {event.original_run_id})" if event.original_run_id else ""
            return f"{event.tool_name}: cache hit, recorded result reused, not run again{origin}"
        case "tool_outcome_unknown":
            return f"{event.tool_name}: outcome unknown {event.message}".rstrip()
        case "confirmation_requested":
            return f"{event.tool_name} waits for a yes: {clip(event.preview)}"
        case "confirmation_approved":
            return f"approved by {event.by or '?'}"
        case "confirmation_denied":
            return f"denied by {event.by or '?'}: {event.reason}"
        case "budget_reserved":
            return f"reserved {money(event.amount_usd)} for {event.model} ({event.surface})"
        case "budget_settled":
            return f"settled {money(event.actual_usd)} (reserved {money(event.reserved_usd)})"
        case "budget_released":
            return f"released {money(event.amount_usd)} {event.reason}".rstrip()
        case "budget_exceeded":
            scope = "run" if event.scope == "run" else "user's day"
            return (
                f"the {scope} cap {money(event.cap_usd)} would be passed: "
                f"{money(event.committed_usd)} committed + {money(event.requested_usd)} asked"
            )
        case "memory_compacted":
            versions = ", ".join(f"v{v}" for v in event.replaced_versions)
            return (
                f"{event.method}: tool results of {versions}; "
                f"{event.tokens_before:,} -> {event.tokens_after:,} tokens"
            )
        case "critic_verdict":
            if event.accepted:
                return f"{event.method}: accepted (revision {event.revision})"
            failed = "; ".join(
                f"{c.name}: {c.issue}" if c.issue else c.name for c in event.checks if not c.passed
            )
            return f"{event.method}: rejected (revision {event.revision}): {failed}"
        case "revision_requested":
            return f"revision {event.revision}: " + "; ".join(event.issues)
        case "conversation_continued":
            summarised = (
                f"; truncated into the summary: {', '.join(event.summarised_runs)}"
                if event.summarised_runs
                else ""
            )
            summary = f", a summary of {len(event.summary):,} characters" if event.summary else ""
            return (
                f"after {event.follows} (v{event.follows_version}): "
                f"{len(event.exchanges)} earlier exchanges{summary}{summarised}"
            )
        case "conversation_joined":
            return f"joined {event.conversation_id}" + (
                f" after {event.follows}" if event.follows else ""
            )
    return ""
