"""Run a whole seqwatch federation in one process, without Ray or a SuperLink.

:class:`InProcessGrid` stands in for Flower's :class:`~flwr.serverapp.Grid`: it
hands every message straight to the real ClientApp (:data:`client.app.app`)
with the node's :class:`~flwr.app.Context`, as a SuperNode would, one node
after the other. What travels is a deep copy of each message's content (as if
serialised), so a client can never change a record the server still holds.
:func:`run_in_process` drives the real ServerApp logic
(:func:`server.app.run_federation`) over such a grid.

Fast and deterministic (clients run sequentially, seeded as in a simulation;
simulated nodes use one torch thread, see :func:`client.local.local_config`):
the tests and :mod:`simulations.experiment` use it. ``flwr run`` (Ray
simulation) runs the very same ServerApp and ClientApp code, and trains the
very same weights (nodes seed by partition, the server aggregates replies in a
fixed order); see :mod:`simulations.flower_engine`.

Node configs: ``{"partition-id": k, "num-partitions": n}`` (simulation data
from the run config's ``data.*``, :func:`sim_nodes`) or deployment-style
``{"data-path": DIR, ...}``.
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

#: Node ids the grid gives its nodes: ``FIRST_NODE_ID + index``.
FIRST_NODE_ID = 100
#: Node id of the server-side task (what a SuperLink would set for the ServerApp process).
SERVER_NODE_ID = 0


def set_server_identity(run_id: int = 1) -> None:
    """Set Flower's task identity of this process: messages need a run id outside a Flower process."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, SERVER_NODE_ID, 1


def sim_nodes(n: int) -> list[dict[str, Any]]:
    """Node configs of ``n`` simulated nodes, as the simulation engine injects them."""
    return [{"partition-id": i, "num-partitions": n} for i in range(n)]


class InProcessGrid(Grid):
    """In-process Grid: messages go straight to the ClientApp, one node after the other.

    Args:
        run_config: the flat run config every node sees (``context.run_config``).
        node_configs: one node config per node; node ``i`` gets id ``FIRST_NODE_ID + i``.
        fail_on: ``(message type, n-th call)``: raise ``KeyboardInterrupt`` at that call of
            ``send_and_receive`` (simulates a server crash, for resume tests).
        record: keep every message sent and every reply in :attr:`sent` / :attr:`replies`
            (tests inspect them; a long experiment should not keep all the weights).
        client_app: the ClientApp to call (default :data:`client.app.app`).
    """

    def __init__(
        self,
        run_config: Mapping[str, Any],
        node_configs: Sequence[Mapping[str, Any]],
        *,
        fail_on: tuple[str, int] | None = None,
        record: bool = True,
        client_app: Any = None,
        run_id: int = 1,
    ) -> None:
        if client_app is None:
            from client import app as client_module

            client_app = client_module.app
        self.client_app = client_app
        self.contexts = {
            FIRST_NODE_ID + i: Context(
                run_id=run_id,
                node_id=FIRST_NODE_ID + i,
                node_config=dict(nc),
                state=RecordDict(),
                run_config=dict(run_config),
            )
            for i, nc in enumerate(node_configs)
        }
        self.record = record
        self.sent: list[Message] = []
        self.replies: list[Message] = []
        #: per ``send_and_receive`` call: (message type, number of messages, wall seconds)
        self.calls: list[tuple[str, int, float]] = []
        self._ids = itertools.count(1)
        self._counts: dict[str, int] = {}
        self.fail_on = fail_on

    # -- the parts of the Grid interface seqwatch's ServerApp does not use ------------------------
    def set_run(self, run: Any) -> None:  # pragma: no cover - not used
        pass

    @property
    def run(self) -> Any:  # pragma: no cover - not used
        return None

    def create_message(self, *args: Any, **kwargs: Any) -> Message:  # pragma: no cover
        raise NotImplementedError

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:  # pragma: no cover
        raise NotImplementedError

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:  # pragma: no cover
        raise NotImplementedError

    # -- what the ServerApp uses -------------------------------------------------------------------
    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        messages = list(messages)
        kind = messages[0].metadata.message_type if messages else ""
        self._counts[kind] = self._counts.get(kind, 0) + 1
        if self.fail_on == (kind, self._counts[kind]):
            raise KeyboardInterrupt("simulated server crash")
        t0 = time.perf_counter()
        out = []
        for m in messages:
            m.metadata.__dict__["_message_id"] = f"m{next(self._ids)}"
            # what travels is a serialised copy: later changes to shared records must not reach it
            m.content = copy.deepcopy(m.content)
            try:
                reply = self.client_app(m, self.contexts[m.metadata.dst_node_id])
            except Exception as exc:
                reply = Message(Error(code=0, reason=str(exc)), reply_to=m)
            if self.record:
                self.sent.append(m)
                self.replies.append(reply)
            out.append(reply)
        self.calls.append((kind, len(messages), time.perf_counter() - t0))
        return out


def run_in_process(
    run_config: Mapping[str, Any],
    node_configs: Sequence[Mapping[str, Any]] | int,
    **grid_options: Any,
) -> tuple[InProcessGrid, dict[str, Any]]:
    """Run :func:`server.app.run_federation` over an :class:`InProcessGrid`.

    ``node_configs``: node configs, or a number ``n`` of simulated nodes (:func:`sim_nodes`).
    Returns the grid and what ``final.json`` holds.
    """
    from common.config import parse_config
    from server.app import run_federation

    nodes = sim_nodes(node_configs) if isinstance(node_configs, int) else list(node_configs)
    cfg = parse_config(dict(run_config))
    set_server_identity(grid_options.get("run_id", 1))
    grid = InProcessGrid(run_config, nodes, **grid_options)
    return grid, run_federation(grid, cfg)
