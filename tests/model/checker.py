"""A small explicit-state model checker: breadth-first search over every interleaving.

A model gives ``initial()``, ``steps(state) -> [(label, next_state)]``, ``invariants`` (named
checks of one state, returning a message or None) and ``stuck(state)`` (a message when a state
with no step left is a deadlock).  States are hashable; the visited set holds each state once,
and a parent pointer per state gives back the shortest path to any violation.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Callable, Protocol


class Model(Protocol):
    invariants: Sequence[tuple[str, Callable[[Hashable], str | None]]]

    def initial(self) -> Hashable: ...

    def steps(self, state: Hashable) -> list[tuple[str, Hashable]]: ...

    def stuck(self, state: Hashable) -> str | None: ...


@dataclass
class Violation:
    invariant: str
    message: str
    trace: list[str]

    def __str__(self) -> str:
        lines = [f"{self.invariant} violated: {self.message}", "trace (shortest):"]
        lines += [f"  {i:2d}. {step}" for i, step in enumerate(self.trace, 1)]
        return "\n".join(lines)


@dataclass
class Result:
    states: int = 0
    depth: int = 0
    seconds: float = 0.0
    violation: Violation | None = None
    complete: bool = True
    notes: list[str] = field(default_factory=list)

    def summary(self, name: str) -> str:
        found = f"; {self.violation.invariant}" if self.violation else "; no violation"
        return f"{name}: {self.states} states, depth {self.depth}, {self.seconds:.1f} s{found}"


def explore(model: Model, max_states: int = 5_000_000) -> Result:
    """Visit every reachable state; stop at the first violation (BFS makes it a shortest one)."""
    started = time.perf_counter()
    start = model.initial()
    parent: dict[Hashable, tuple[Hashable, str] | None] = {start: None}
    depth = {start: 0}
    queue = deque([start])
    result = Result()

    def trace_to(state: Hashable, last: str | None = None) -> list[str]:
        steps: list[str] = [] if last is None else [last]
        link = parent[state]
        while link is not None:
            state, label = link
            steps.append(label)
            link = parent[state]
        return steps[::-1]

    def check(state: Hashable) -> Violation | None:
        for name, invariant in model.invariants:
            message = invariant(state)
            if message:
                return Violation(name, message, trace_to(state))
        return None

    result.violation = check(start)
    while queue and result.violation is None:
        state = queue.popleft()
        successors = model.steps(state)
        if not successors:
            message = model.stuck(state)
            if message:
                result.violation = Violation("I4", message, trace_to(state))
                break
        for label, nxt in successors:
            if nxt in parent:
                continue
            parent[nxt] = (state, label)
            depth[nxt] = depth[state] + 1
            result.depth = max(result.depth, depth[nxt])
            result.violation = check(nxt)
            if result.violation:
                break
            queue.append(nxt)
        if len(parent) > max_states:
            result.complete = False
            break
    result.states = len(parent)
    result.seconds = time.perf_counter() - started
    return result
