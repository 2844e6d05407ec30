"""State machines declared in code: states, terminal states and the actions between them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from convergent.errors import ConfigurationError

__all__ = ["Action", "StateMachine"]


@dataclass(frozen=True)
class Action:
    """An action allowed from ``sources`` that moves a resource to ``target``.

    ``target`` may map each source to its own target (``cancel``: pending -> cancelled,
    reserved -> compensating); a plain string sends every source to the same state.
    """

    name: str
    sources: frozenset[str]
    target: str | Mapping[str, str]

    def __init__(
        self, name: str, sources: Iterable[str] | str, target: str | Mapping[str, str]
    ) -> None:
        object.__setattr__(self, "name", name)
        srcs = frozenset([sources] if isinstance(sources, str) else sources)
        object.__setattr__(self, "sources", srcs)
        object.__setattr__(self, "target", target if isinstance(target, str) else dict(target))
        if not srcs:
            raise ConfigurationError(f"action {name!r} needs at least one source state")
        if not isinstance(target, str) and set(target) != srcs:
            raise ConfigurationError(f"action {name!r}: its target map must cover every source")

    def target_for(self, source: str) -> str:
        return self.target if isinstance(self.target, str) else self.target[source]

    @property
    def targets(self) -> frozenset[str]:
        if isinstance(self.target, str):
            return frozenset([self.target])
        return frozenset(self.target.values())


@dataclass(frozen=True)
class StateMachine:
    """States a resource moves through; validated when declared."""

    name: str
    initial: str
    actions: tuple[Action, ...]
    terminal: frozenset[str] = field(default_factory=frozenset)

    def __init__(
        self,
        name: str,
        *,
        initial: str,
        actions: Iterable[Action],
        terminal: Iterable[str] = (),
    ) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "initial", initial)
        object.__setattr__(self, "actions", tuple(actions))
        object.__setattr__(self, "terminal", frozenset(terminal))
        names = [a.name for a in self.actions]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"machine {name!r}: action names must be unique")
        unknown = self.terminal - self.states
        if unknown:
            raise ConfigurationError(f"machine {name!r}: unknown terminal states {sorted(unknown)}")
        for action in self.actions:
            if action.sources & self.terminal:
                raise ConfigurationError(
                    f"machine {name!r}: action {action.name!r} leaves a terminal state"
                )

    @property
    def states(self) -> frozenset[str]:
        found = {self.initial} | set(self.terminal)
        for action in self.actions:
            found |= action.sources | action.targets
        return frozenset(found)

    def action(self, name: str) -> Action:
        for action in self.actions:
            if action.name == name:
                return action
        raise ConfigurationError(f"machine {self.name!r} has no action {name!r}")

    def allowed_actions(self, state: str) -> list[str]:
        """The actions a resource in ``state`` may take, in declaration order."""
        return [a.name for a in self.actions if state in a.sources]

    def is_terminal(self, state: str) -> bool:
        return state in self.terminal

    def to_mermaid(self) -> str:
        """The machine as a Mermaid ``stateDiagram-v2``."""
        lines = ["stateDiagram-v2", f"    [*] --> {self.initial}"]
        for action in self.actions:
            for source in sorted(action.sources):
                lines.append(f"    {source} --> {action.target_for(source)}: {action.name}")
        lines.extend(f"    {state} --> [*]" for state in sorted(self.terminal))
        return "\n".join(lines)
