"""State machine declarations: validation and the Mermaid rendering."""

from __future__ import annotations

import pytest

from convergent.errors import ConfigurationError
from convergent.resources import Action, StateMachine

MACHINE = StateMachine(
    "booking",
    initial="pending",
    actions=[
        Action("confirm", "pending", "ready"),
        Action("cancel", ["pending", "ready"], "cancelled"),
    ],
    terminal=["cancelled"],
)


def test_states_are_collected_from_the_actions() -> None:
    assert MACHINE.states == {"pending", "ready", "cancelled"}


def test_allowed_actions_follow_declaration_order() -> None:
    assert MACHINE.allowed_actions("pending") == ["confirm", "cancel"]
    assert MACHINE.allowed_actions("cancelled") == []


def test_mermaid_lists_every_edge_and_the_terminal_states() -> None:
    assert MACHINE.to_mermaid().splitlines() == [
        "stateDiagram-v2",
        "    [*] --> pending",
        "    pending --> ready: confirm",
        "    pending --> cancelled: cancel",
        "    ready --> cancelled: cancel",
        "    cancelled --> [*]",
    ]


def test_an_action_leaving_a_terminal_state_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="terminal"):
        StateMachine("m", initial="a", actions=[Action("go", "done", "a")], terminal=["done"])


def test_duplicate_action_names_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="unique"):
        StateMachine("m", initial="a", actions=[Action("go", "a", "b"), Action("go", "b", "a")])


def test_a_target_map_must_cover_every_source() -> None:
    with pytest.raises(ConfigurationError, match="cover"):
        Action("drop", ["a", "b"], {"a": "x"})


def test_unknown_actions_are_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="no action"):
        MACHINE.action("teleport")
