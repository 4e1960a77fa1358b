"""How the worker is doing: consumer lag, state kept, SLA targets in force, /health, status log.

Every worker exports these for itself (docs/contract.md section 4, per worker).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError
from prometheus_client import Counter as PrometheusCounter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .pipeline import Pipeline
from .tickets import SlaTargets

log = logging.getLogger("cx_stream")

Lags = dict[tuple[str, int], int]


def consumer_lags(app: Any, input_topics: set[str]) -> Lags:
    """Per input partition owned: end offset minus the next offset to process."""
    monitor = app.monitor
    lags = {}
    for tp in app.assignor.assigned_actives():
        if tp.topic not in input_topics or tp not in monitor.tp_end_offsets:
            continue
        read = app.consumer.read_offset(tp)
        next_offset = read + 1 if read is not None else monitor.tp_committed_offsets.get(tp, 0)
        lags[(tp.topic, tp.partition)] = max(monitor.tp_end_offsets[tp] - next_offset, 0)
    return lags


def state_entries(pipeline: Pipeline) -> dict[str, int]:
    """Tickets and survey responses this worker keeps, over the partitions it owns."""
    totals: Counter[str] = Counter({"tickets": 0, "surveys": 0})
    for (table, _), count in pipeline.entries.items():
        totals[table] += count
    return dict(totals)


class HealthCollector(Collector):
    """Processing health beside the metrics: consumer lag, state kept, and the SLA targets in
    force (so that alert rules compare a quantile with its priority's target)."""

    def __init__(
        self,
        lags: Callable[[], Lags],
        entries: Callable[[], dict[str, int]],
        sla: SlaTargets,
        sla_clock: str,
    ) -> None:
        self._lags = lags
        self._entries = entries
        self._sla = sla
        self._sla_clock = sla_clock

    def collect(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            "cx_consumer_lag",
            "Input records not yet processed, per partition this worker owns",
            labels=["topic", "partition"],
        )
        for (topic, partition), records in sorted(self._lags().items()):
            lag.add_metric([topic, str(partition)], records)
        yield lag
        entries = GaugeMetricFamily(
            "cx_state_entries",
            "Tickets and survey responses this worker keeps in its state tables",
            labels=["table"],
        )
        for table, count in sorted(self._entries().items()):
            entries.add_metric([table], count)
        yield entries
        for name, help_text, targets in (
            (
                "cx_first_response_sla_target_seconds",
                "Seconds a first response may take before it breaches the SLA, per priority"
                " (CX_FIRST_RESPONSE_SLA)",
                self._sla.first_response,
            ),
            (
                "cx_resolution_sla_target_seconds",
                "Seconds a resolution may take before it breaches the SLA, per priority"
                " (CX_RESOLUTION_SLA)",
                self._sla.resolution,
            ),
        ):
            target = GaugeMetricFamily(name, help_text, labels=["priority"])
            for priority, seconds in sorted(targets.items()):
                target.add_metric([priority], seconds)
            yield target
        clock = GaugeMetricFamily(
            "cx_sla_clock_info",
            "The clock SLA breaches are judged on (CX_SLA_CLOCK): calendar or business",
            labels=["clock"],
        )
        clock.add_metric([self._sla_clock], 1)
        yield clock


class StatusLog:
    """A `status` log line: events per second since the last line, outcomes so far."""

    def __init__(self, outcomes: PrometheusCounter, interval: float) -> None:
        self.outcomes = outcomes
        self.interval = interval
        self.processed_before = 0

    def line(self, extra: Mapping[str, Any]) -> None:
        outcomes: Counter[str] = Counter()
        for metric in self.outcomes.collect():
            for sample in metric.samples:
                outcomes[sample.labels["outcome"]] += int(sample.value)
        processed = sum(outcomes.values())
        rate = (processed - self.processed_before) / self.interval
        self.processed_before = processed
        log.info(
            "status",
            extra={"events_per_second": round(rate, 1), "outcomes": dict(outcomes), **extra},
        )


PROBE_INTERVAL = 2.0
"""Seconds between broker probes; readiness follows the broker within about this long."""


class BrokerProbe:
    """Asks the brokers for metadata every PROBE_INTERVAL: a worker that cannot reach them is
    not ready, whatever state its Kafka clients are in while they retry."""

    def __init__(self, client_options: Mapping[str, Any]) -> None:
        self.client_options = dict(client_options)
        """aiokafka's keyword arguments: bootstrap servers and connection security."""
        self.connected = False

    async def run(self) -> None:
        """Probe until cancelled (the worker stops)."""
        client: AIOKafkaClient | None = None
        try:
            while True:
                try:
                    if client is None:
                        client = AIOKafkaClient(
                            request_timeout_ms=int(PROBE_INTERVAL * 1000), **self.client_options
                        )
                        await client.bootstrap()
                    await asyncio.wait_for(client.fetch_all_metadata(), PROBE_INTERVAL)
                    self._note(True)
                except (TimeoutError, KafkaError, OSError) as error:
                    self._note(False, error)
                    if client is not None:
                        await client.close()
                        client = None
                await asyncio.sleep(PROBE_INTERVAL)
        finally:
            if client is not None:
                await client.close()

    def _note(self, connected: bool, error: BaseException | None = None) -> None:
        if connected != self.connected:
            if connected:
                log.info("the brokers answer again")
            else:
                log.warning("the brokers do not answer", extra={"error": type(error).__name__})
        self.connected = connected


class Readiness:
    """Whether the worker's numbers can be trusted now (GET /health/ready): the brokers answer,
    no rebalance is under way, and the tables and then the windows are restored."""

    def __init__(
        self, app: Any, probe: BrokerProbe, are_windows_restored: Callable[[], bool]
    ) -> None:
        self.app = app
        self.probe = probe
        self.are_windows_restored = are_windows_restored
        """Whether the windows are restored since partitions were last revoked."""

    def problems(self) -> list[str]:
        """What keeps the worker from being ready; none when it is."""
        problems = []
        if not self.probe.connected:
            problems.append("the brokers do not answer")
        if self.app.rebalancing:
            problems.append("the consumer group is rebalancing")
        if not self.app.tables.recovery.completed.is_set():
            problems.append("the tables are being restored from their changelogs")
        elif not self.are_windows_restored():
            problems.append("the windows are being restored")
        return problems

    def answer(self) -> tuple[int, dict[str, Any]]:
        """GET /health/ready: 200 and "ok", or 503 and what keeps the worker from being ready."""
        problems = self.problems()
        status = "unavailable" if problems else "ok"
        return (503 if problems else 200), {"status": status, "problems": problems}
