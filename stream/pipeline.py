"""One record in: decode it, update the ticket or survey state, fold the change into windows.

No Kafka here: the state tables are plain mappings (Faust tables in the worker, dicts in unit
tests), and a state is written back only when the event changed it, so the changelog carries
one record per state change rather than one per event.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping, Sequence
from typing import Any, Literal

from .events import SurveyAnswered, decode
from .tickets import (
    Observation,
    SlaTargets,
    SurveyResponse,
    TicketState,
    anomalies,
    apply_survey_event,
    apply_ticket_event,
    survey_observations,
    survey_slot,
    ticket_observations,
)
from .windows import PartitionWindows, WindowSpec

Outcome = Literal["accepted", "duplicate", "anomaly"]
StateTable = MutableMapping[str, Any]


class Pipeline:
    """The per-partition processing of the input topics, shared by all partitions of a worker."""

    def __init__(
        self,
        specs: Sequence[WindowSpec],
        sla: SlaTargets,
        tickets: StateTable,
        surveys: StateTable,
    ) -> None:
        self.specs = tuple(specs)
        self.sla = sla
        self.tickets = tickets
        self.surveys = surveys
        self.partitions: dict[int, PartitionWindows] = {}

    def windows(self, partition: int, now: float) -> PartitionWindows:
        windows = self.partitions.get(partition)
        if windows is None:
            windows = self.partitions[partition] = PartitionWindows(self.specs, now)
        return windows

    def process(self, topic: str, partition: int, value: bytes | None, now: float) -> Outcome:
        """Apply one record of input topic `topic` (named without prefix).

        Raises events.InvalidEvent for a record that belongs in the dead-letter topic.
        """
        event = decode(topic, value, now)
        if isinstance(event, SurveyAnswered):
            slot = survey_slot(event)
            stored = self.surveys.get(slot)
            response = None if stored is None else SurveyResponse.from_json(stored)
            if response is not None and response.stamp[1] == event.event_id:
                return "duplicate"
            updated = apply_survey_event(response, event, partition)
            if updated is response:
                return "accepted"
            self.surveys[slot] = updated.to_json()
            old = [] if response is None else survey_observations(response)
            self._fold(partition, old, survey_observations(updated), now)
            return "accepted"
        stored = self.tickets.get(event.ticket_id)
        state = TicketState(partition) if stored is None else TicketState.from_json(stored)
        if state.holds(event.event_id):
            return "duplicate"
        updated_state = apply_ticket_event(state, event)
        if updated_state is state:
            return "accepted"
        self.tickets[event.ticket_id] = updated_state.to_json()
        self._fold(
            partition,
            ticket_observations(state, self.sla),
            ticket_observations(updated_state, self.sla),
            now,
        )
        return "anomaly" if anomalies(updated_state) > anomalies(state) else "accepted"

    def _fold(
        self, partition: int, old: list[Observation], new: list[Observation], now: float
    ) -> None:
        windows = self.windows(partition, now)
        # adds first, so a series that keeps a reference is never dropped and re-created
        for observation in new:
            if observation not in old:
                windows.observe(observation, 1)
        for observation in old:
            if observation not in new:
                windows.observe(observation, -1)

    def rebuild(self, partitions: Iterable[int], now: float) -> None:
        """Derive the windows of `partitions` from the state tables, dropping all others.

        Called after Faust restored the tables (start-up, crash recovery, rebalance): the
        tables are the truth, windows are a cache of what they add up to.
        """
        wanted = set(partitions)
        self.partitions = {partition: PartitionWindows(self.specs, now) for partition in wanted}
        states = [
            *(stored for stored in self.tickets.values() if stored["partition"] in wanted),
            *(stored for stored in self.surveys.values() if stored["partition"] in wanted),
        ]
        for stored in states:
            windows = self.partitions[stored["partition"]]
            for observation in self._observations(stored):
                windows.observe(observation, 1)

    def _observations(self, stored: dict[str, Any]) -> list[Observation]:
        """Observations of a stored ticket state or survey response (surveys have a score)."""
        if "score" in stored:
            return survey_observations(SurveyResponse.from_json(stored))
        return ticket_observations(TicketState.from_json(stored), self.sla)
