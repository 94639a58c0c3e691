"""Loading the user's agents for ``replay``, ``fork`` and ``whatif``: ``--agents MODULE:NAME``.

Replaying a run needs the agent's code (its tools, its critic, its memory policy): the log holds
what happened, not the code. ``MODULE:NAME`` (``myapp.agents:support`` or ``agents.py:support``,
like ``uvicorn app:app``) names an ``Agent``, a list or dict of them, a ``Budgets`` (the budget
policies the runs were recorded under), or a function of no arguments returning any of these.
The working directory is importable, as for ``python -m``.

Without ``--agents`` the demo's agent and budgets are used, so the demo's log replays as it is.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentledger.engine._agent import Agent
from agentledger.engine.policies._budget import Budgets

from ._errors import UsageError


@dataclass(frozen=True)
class Loaded:
    """The agents (by name) and budgets ``--agents`` gave."""

    agents: Mapping[str, Agent]
    budgets: Budgets | None

    def pick(self, name: str | None) -> Agent | None:
        """The agent named ``name``; with no name, the only agent loaded (``None`` if none)."""
        if name is not None:
            if name not in self.agents:
                known = ", ".join(sorted(self.agents)) or "none"
                raise UsageError(f"no agent named {name!r} was loaded (loaded: {known})")
            return self.agents[name]
        if len(self.agents) > 1:
            raise UsageError(
                f"--agents loaded {len(self.agents)} agents; say which with --agent NAME"
            )
        return next(iter(self.agents.values()), None)


def _module(path: str) -> Any:
    if path.endswith(".py"):
        file = Path(path)
        if not file.is_file():
            raise UsageError(f"--agents: no file {path}")
        spec = importlib.util.spec_from_file_location(f"_agentledger_user_{file.stem}", file)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    if "" not in sys.path:
        sys.path.insert(0, "")  # the working directory, as python -m has it
    return importlib.import_module(path)


def _resolve(spec: str) -> Any:
    path, sep, name = spec.rpartition(":")
    if not sep or not path or not name:
        raise UsageError(f"--agents takes MODULE:NAME (e.g. myapp.agents:support), not {spec!r}")
    try:
        value = getattr(_module(path), name)
    except UsageError:
        raise
    except AttributeError:
        raise UsageError(f"--agents: {path} has no {name!r}") from None
    except Exception as exc:  # the user's module failed to import: one line, theirs to fix
        raise UsageError(
            f"--agents: importing {path} failed: {type(exc).__name__}: {exc}"
        ) from None
    if callable(value) and not isinstance(value, Agent | Budgets):
        try:
            value = value()
        except Exception as exc:
            raise UsageError(f"--agents: {spec}() failed: {type(exc).__name__}: {exc}") from None
    return value


def _items(spec: str, value: Any) -> Iterable[Agent | Budgets]:
    if isinstance(value, Agent | Budgets):
        return [value]
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, Iterable) and not isinstance(value, str | bytes):
        items = list(value)
        if all(isinstance(v, Agent | Budgets) for v in items):
            return items
    raise UsageError(
        f"--agents: {spec} is a {type(value).__name__}, not an Agent, a list or dict of "
        "Agents, or a Budgets"
    )


def load(specs: Sequence[str]) -> Loaded:
    """The agents and budgets ``specs`` name; the demo's when there are none."""
    if not specs:
        from ._demo import DEMO_BUDGETS, demo_agent

        agent = demo_agent()
        return Loaded({agent.name: agent}, DEMO_BUDGETS)
    agents: dict[str, Agent] = {}
    budgets: Budgets | None = None
    for spec in specs:
        for item in _items(spec, _resolve(spec)):
            if isinstance(item, Budgets):
                budgets = item
            else:
                agents[item.name] = item
    return Loaded(agents, budgets)
