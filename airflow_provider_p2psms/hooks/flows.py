"""Status look-ups as flows: a gateway's requests and parsing, written once, run over any transport.

A gateway describes how it reads delivery states as generators that yield the
:class:`~airflow_provider_p2psms.hooks.transport.ApiCall` they need and receive each answer (or,
thrown into them, the error it raised), then return the states. The worker runs them over the
pooled ``requests`` session, the triggerer over an async client: the URLs, envelopes and status
codes of a gateway are not written twice.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass

from airflow_provider_p2psms.exceptions import P2PSmsError
from airflow_provider_p2psms.hooks.transport import ApiCall, GatewayResponse
from airflow_provider_p2psms.models import DeliveryState

#: A gateway's look-up of some receipts' states: yields calls, receives their answers, returns the states.
StatusFlow = Generator[ApiCall, GatewayResponse, list[DeliveryState]]


@dataclass(frozen=True)
class StatusLookup:
    """One independent status look-up: which of the receipts given it answers for, and its flow."""

    positions: list[int]
    flow: StatusFlow


class FlowRunner:
    """
    Steps one flow: :meth:`next_call` gives the next request to make (``None`` once the flow is done),
    and the caller hands back what the request gave with :meth:`answered` or :meth:`failed`.
    """

    def __init__(self, flow: StatusFlow) -> None:
        self._flow = flow
        self._answer: GatewayResponse | None = None
        self._error: P2PSmsError | None = None
        self._started = False
        self.states: list[DeliveryState] = []

    def next_call(self) -> ApiCall | None:
        try:
            if self._error is not None:
                error, self._error = self._error, None
                return self._flow.throw(error)
            if not self._started:
                self._started = True
                return next(self._flow)
            assert self._answer is not None
            return self._flow.send(self._answer)
        except StopIteration as done:
            self.states = list(done.value)
            return None

    def answered(self, answer: GatewayResponse) -> None:
        self._answer = answer

    def failed(self, error: P2PSmsError) -> None:
        self._error = error


def in_order(lookups: Sequence[StatusLookup], found: Sequence[list[DeliveryState]], count: int) -> list[DeliveryState]:
    """The states the look-ups found, back in the order of the ``count`` receipts they were made for."""
    states: list[DeliveryState | None] = [None] * count
    for lookup, results in zip(lookups, found, strict=True):
        for position, state in zip(lookup.positions, results, strict=True):
            states[position] = state
    missing = [position for position, state in enumerate(states) if state is None]
    if missing:
        raise P2PSmsError(f"The status look-ups left {len(missing)} of {count} receipts without a state.")
    return [state for state in states if state is not None]
