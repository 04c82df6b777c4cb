"""Typed stand-ins shared by the test modules (imported as ``helpers``: pytest puts ``tests/`` on the path).

``StubGrid`` is a real :class:`flwr.serverapp.Grid` whose methods all raise: a test's fake
Grid subclasses it and overrides only what the code under test calls. ``strategy_of`` gives
:func:`server.strategy.make_strategy`'s strategy as the class the test expects of it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from flwr.app import Message
from flwr.serverapp import Grid

from common.config import FederationConfig
from server.strategy import make_strategy

S = TypeVar("S")


class StubGrid(Grid):
    """A Grid that does nothing: every method raises unless a subclass overrides it."""

    def set_run(self, run: Any) -> None:
        raise NotImplementedError

    @property
    def run(self) -> Any:
        raise NotImplementedError

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        raise NotImplementedError

    def get_node_ids(self) -> Iterable[int]:
        raise NotImplementedError

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        raise NotImplementedError


def strategy_of(kind: type[S], fed: FederationConfig) -> S:
    """``make_strategy(fed)``, checked to be a ``kind`` (``RecordingMixin`` or one ``Recording*`` class)."""
    strategy = make_strategy(fed)
    if not isinstance(strategy, kind):
        raise AssertionError(f"make_strategy gave a {type(strategy).__name__}, not a {kind.__name__}")
    return strategy
