"""The critic (pattern 6): code checks on an answer first, then an optional LLM judge.

``Critic`` runs every check of ``_checks`` on an answer, so a verdict records every problem at
once; only when they all pass does its ``LLMJudge`` look at the answer. A critic is
configuration: ``Critic.from_config`` builds one from plain data (JSON, TOML, a surface's
settings), with user callables and judge models passed in by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentledger.engine.models._model import Model
from agentledger.events import CheckResult

from ._checks import JUDGE_CHECK_NAME, Check, CriticConfigError, LLMJudge, _failed, _quoted
from ._critic_config import build_critic_parts

_REVISION_PROMPT = (
    "Your answer was not accepted. Revise it so that it fixes every issue below, and reply with "
    "the complete revised answer only:"
)


@dataclass(frozen=True, slots=True)
class Critic:
    """An agent's critic: code ``checks``, an optional ``judge``, and how often to revise.

    A rejected answer is sent back with the issues at most ``max_revisions`` times; the answer
    after the last revision is returned as it is, flagged, whatever the critic thinks of it.
    Check names are unique within a critic (stats are counted per name) and ``llm_judge`` is
    reserved for the judge.
    """

    checks: Sequence[Check] = ()
    judge: LLMJudge | None = None
    max_revisions: int = 2

    def __post_init__(self) -> None:
        checks = tuple(self.checks)
        object.__setattr__(self, "checks", checks)
        if self.max_revisions < 0:
            raise ValueError("Critic.max_revisions cannot be negative")
        names = [c.name for c in checks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"several critic checks are named {_quoted(dupes)}; names must differ")
        if JUDGE_CHECK_NAME in names:
            raise ValueError(f"the check name {JUDGE_CHECK_NAME!r} is reserved for the judge")

    def evaluate(self, answer: str) -> tuple[CheckResult, ...]:
        """Run every check, in order; all results are returned, not just the first failure.

        A check that raises (a custom ``Check`` with a bug) is a failed check, never an error.
        """
        results = []
        for check in self.checks:
            try:
                results.append(check.check(answer))
            except Exception as exc:  # a buggy check must not take the run down with it
                results.append(_failed(check.name, f"the check raised {type(exc).__name__}: {exc}"))
        return tuple(results)

    def accepted(self, results: Sequence[CheckResult]) -> bool:
        """Whether every result passed (no results: accepted)."""
        return all(r.passed for r in results)

    def issues(self, results: Sequence[CheckResult]) -> tuple[str, ...]:
        """The issues of the failed results, in order, one per failed check."""
        return tuple(
            r.issue or f"the answer failed the check {r.name!r}" for r in results if not r.passed
        )

    def wants_judge(self, results: Sequence[CheckResult]) -> bool:
        """Whether the judge looks at the answer next: there is one and the code checks passed."""
        return self.judge is not None and self.accepted(results)

    def may_revise(self, revisions_so_far: int) -> bool:
        """Whether a rejected answer may be sent back once more (else it is returned flagged)."""
        return revisions_so_far < self.max_revisions

    def revision_message(self, issues: Sequence[str]) -> str:
        """The user message asking the model to revise its answer, naming every issue."""
        if not issues:
            raise ValueError("a revision request needs at least one issue")
        listed = "\n".join(f"{i}. {issue}" for i, issue in enumerate(issues, start=1))
        return f"{_REVISION_PROMPT}\n{listed}"

    @classmethod
    def from_config(
        cls,
        config: Mapping[str, Any],
        *,
        callables: Mapping[str, Callable[[str], str | None]] | None = None,
        models: Mapping[str, Model] | None = None,
    ) -> Critic:
        """Build a critic from plain data, e.g. one surface's settings::

            {"max_revisions": 2,
             "checks": [{"type": "max_length", "chars": 800},
                        {"type": "banned_phrases", "phrases": ["as an AI"]},
                        {"type": "callable", "name": "no_urls"}],
             "judge": {"model": "gpt-4o-mini", "criteria": "Polite and on topic."}}

        Check types: ``citations`` (pattern, min_count), ``max_length`` (chars, words),
        ``banned_phrases`` and ``required_keywords`` (phrases / keywords, case_sensitive),
        ``json_schema`` (schema: a dict in the supported subset), each with an optional
        ``name``; ``callable`` (name: a key of ``callables``). The judge's ``model`` is a key of
        ``models``. Raises ``CriticConfigError`` naming every problem found.
        """
        checks, judge, max_revisions = build_critic_parts(config, callables or {}, models or {})
        try:
            return cls(checks, judge, max_revisions)
        except ValueError as exc:  # duplicate check names
            raise CriticConfigError([str(exc)]) from None
