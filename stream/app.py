"""The Faust app: topics, tables, agents and timers wiring the pure parts together.

Data flow (CONTRACT.md sections 1-5):

  ticket-* / survey-answered --process-events--> tickets, surveys tables (changelogged)
        |                                        + per-partition windows (derived, in memory)
        |                                  --timer--> cx-partials (window totals per series
        v                                             and source partition, keyed by dimension)
  cx-dead-letter                           --merge-partials--> series table (changelogged)
                                                   --> /metrics and cx-metrics snapshots

Kafka's partitioning decides who does what: input partitions spread the tickets over workers,
and the cx-partials partition of a dimension decides the one worker that merges and exports it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter as Tally
from typing import Any

import faust
import orjson
from faust.serializers import codecs
from prometheus_client import CollectorRegistry, Counter, disable_created_metrics, generate_latest

from .config import Settings
from .events import TOPICS, InvalidEvent
from .exporter import (
    HealthCollector,
    SeriesCollector,
    SeriesRow,
    merge_partials,
    series_rows,
    snapshot,
)
from .pipeline import Pipeline
from .transport import App

log = logging.getLogger("cx_stream")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""Prometheus text exposition format, which generate_latest() writes."""

TABLES = ("tickets", "surveys", "series")

STATUS_INTERVAL = 30.0
"""Seconds between the worker's status log lines."""

FULL_REPUBLISH_EVERY = 30
"""Every this many publish cycles a partition re-sends all its series, not just changed ones."""


class OrjsonCodec(codecs.Codec):
    def _dumps(self, obj: Any) -> bytes:
        return orjson.dumps(obj)

    def _loads(self, s: bytes) -> Any:
        return orjson.loads(s)


codecs.register("orjson", OrjsonCodec())


def faust_settings(settings: Settings) -> dict[str, Any]:
    options: dict[str, Any] = {
        "broker": settings.broker,
        "datadir": settings.data_dir,
        "store": "memory://",
        "topic_partitions": settings.partitions,
        "web_port": settings.web_port,
        "web_bind": settings.web_host,
        "consumer_auto_offset_reset": "earliest",
        # the memory store drops standby data when recovery completes, so standbys buy nothing
        "table_standby_replicas": 0,
        "topic_replication_factor": settings.replication_factor,
        "autodiscover": False,
    }
    if settings.embedded_broker:
        options.update(
            # Tansu reports a partition's end offset as the last batch's base offset + 1: with
            # one record per batch that is right, and changelog recovery restores every record.
            producer_max_batch_size=1,
            # its first group join waits for the rebalance timeout: keep start-up short
            broker_rebalance_timeout=6.0,
            broker_session_timeout=6.0,
            broker_heartbeat_interval=1.0,
        )
    return options


def create_app(settings: Settings) -> faust.App:
    app = App(f"{settings.topic_prefix}{settings.app_id}", **faust_settings(settings))
    raw: dict[str, Any] = {
        "key_serializer": "raw",
        "value_serializer": "raw",
        "partitions": settings.partitions,
    }
    topic_kinds = {settings.topic(name): name for name in TOPICS}
    input_topics = app.topic(*topic_kinds, **raw)
    dead_letter = app.topic(settings.topic("cx-dead-letter"), **raw)
    partials = app.topic(settings.topic("cx-partials"), **raw)
    metrics = app.topic(settings.topic("cx-metrics"), **raw)
    state_schema: Any = faust.Schema(key_type=str, key_serializer="raw", value_serializer="orjson")

    async def rebuild_windows() -> None:
        partitions = set()
        for topic in topic_kinds:
            partitions |= owned_partitions(topic)
        started = time.monotonic()
        pipeline.rebuild(partitions, time.time())
        log.info(
            "windows rebuilt from tables",
            extra={
                "partitions": sorted(partitions),
                "tickets": len(tickets),
                "seconds": round(time.monotonic() - started, 3),
            },
        )

    # once Faust restored the tables (start, crash, rebalance), derive the windows from them
    tickets = app.Table(
        TABLES[0], schema=state_schema, partitions=settings.partitions, on_recover=rebuild_windows
    )
    surveys = app.Table(TABLES[1], schema=state_schema, partitions=settings.partitions)
    series = app.Table(TABLES[2], schema=state_schema, partitions=settings.partitions)

    processed_at_last_status = 0.0
    pipeline = Pipeline(settings.windows, settings.sla, tickets, surveys)
    # *_created samples would only add noise to every scrape
    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry(auto_describe=False)
    events_total = Counter(
        "cx_events",
        "Input records processed, by topic and outcome",
        ["topic", "outcome"],
        registry=registry,
    )
    window_names = [spec.name for spec in settings.windows]

    def owned_partitions(topic: str) -> set[int]:
        return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topic}

    def exported_rows() -> list[SeriesRow]:
        """The series this worker exports: those whose cx-partials partition it owns."""
        owned = owned_partitions(partials.get_topic_name())
        entries = [entry for entry in series.values() if entry["via"] in owned]
        return series_rows(merge_partials(entries, settings.max_segment_values), window_names)

    registry.register(SeriesCollector(exported_rows))

    def consumer_lags() -> dict[tuple[str, int], int]:
        """Per input partition owned: end offset minus the next offset to process."""
        monitor = app.monitor
        lags = {}
        for tp in app.assignor.assigned_actives():
            if tp.topic not in topic_kinds or tp not in monitor.tp_end_offsets:
                continue
            read = monitor.tp_read_offsets.get(tp)
            next_offset = read + 1 if read is not None else monitor.tp_committed_offsets.get(tp, 0)
            lags[(tp.topic, tp.partition)] = max(monitor.tp_end_offsets[tp] - next_offset, 0)
        return lags

    registry.register(HealthCollector(consumer_lags, settings.sla))

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def forget_revoked(sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        for tp in revoked:
            pipeline.partitions.pop(tp.partition, None)

    async def send_dead_letter(message: Any, reason: str) -> None:
        headers = [
            *(message.headers or []),
            ("cx-error", reason.encode()),
            ("cx-source-topic", message.topic.encode()),
            ("cx-source-partition", str(message.partition).encode()),
            ("cx-source-offset", str(message.offset).encode()),
        ]
        await dead_letter.send(key=message.key, value=message.value, headers=headers)

    @app.agent(input_topics, name="process-events")
    async def process_events(stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            outcome: str
            try:
                outcome = pipeline.process(
                    topic_kinds[message.topic], message.partition, message.value, time.time()
                )
            except InvalidEvent as error:
                outcome = "invalid"
                await send_dead_letter(message, str(error))
            except Exception as error:  # a bug must cost one record, never the partition
                log.exception("failed to process a record; sent to the dead-letter topic")
                outcome = "invalid"
                await send_dead_letter(message, f"internal error: {error!r}")
            events_total.labels(message.topic, outcome).inc()

    @app.agent(partials, name="merge-partials")
    async def merge_series(stream: Any) -> None:
        async for event in stream.events():
            partial = orjson.loads(event.message.value)
            key = orjson.dumps(
                [partial["dimension"], partial["value"], partial["source_partition"]]
            ).decode()
            if partial["removed"]:
                if key in series:
                    del series[key]
            else:
                series[key] = {**partial, "via": event.message.partition}

    publish_cycle = 0

    @app.timer(settings.publish_interval)
    async def publish_partials() -> None:
        nonlocal publish_cycle
        publish_cycle += 1
        now = time.time()
        for partition, windows in list(pipeline.partitions.items()):
            windows.advance(now)
            keys = windows.changed
            if publish_cycle % FULL_REPUBLISH_EVERY == 0:
                keys = keys | windows.segments.keys()
            windows.changed = set()
            for dimension, value in sorted(keys):
                if pipeline.partitions.get(partition) is not windows:
                    break  # revoked while we were sending
                partial = windows.partial((dimension, value))
                payload = {
                    "dimension": dimension,
                    "value": value,
                    "source_partition": partition,
                    "removed": partial is None,
                    **(partial or {}),
                }
                await partials.send(key=dimension.encode(), value=orjson.dumps(payload))

    published: dict[str, dict[str, Any]] = {}

    @app.timer(settings.snapshot_interval)
    async def publish_snapshots() -> None:
        now = time.time()
        rows = exported_rows()
        current = {row.key for row in rows}
        for key in list(published):
            if key not in current:
                del published[key]  # no longer ours: the new owner publishes it
        for row in rows:
            value = snapshot(row, now)
            comparable = {name: field for name, field in value.items() if name != "as_of"}
            if published.get(row.key) != comparable:
                await metrics.send(key=row.key.encode(), value=orjson.dumps(value))
                published[row.key] = comparable

    @app.timer(STATUS_INTERVAL)
    async def log_status() -> None:
        nonlocal processed_at_last_status
        outcomes = Tally[str]()
        for metric in events_total.collect():
            for sample in metric.samples:
                outcomes[sample.labels["outcome"]] += int(sample.value)
        processed = sum(outcomes.values())
        rate = (processed - processed_at_last_status) / STATUS_INTERVAL
        processed_at_last_status = processed
        log.info(
            "status",
            extra={
                "events_per_second": round(rate, 1),
                "outcomes": dict(outcomes),
                "input_partitions": sorted(pipeline.partitions),
                "exported_series": len(published),
            },
        )

    @app.page("/metrics")
    async def metrics_page(view: Any, request: Any) -> Any:
        # aiohttp refuses a charset in content_type, so the exposition type goes in as a header
        return view.bytes(
            generate_latest(registry), content_type=None, headers={"Content-Type": CONTENT_TYPE}
        )

    @app.page("/health")
    async def health_page(view: Any, request: Any) -> Any:
        return view.json(
            {
                "status": "ok",
                "input_partitions": sorted(pipeline.partitions),
                "exported_series": len(exported_rows()),
            }
        )

    return app


OWN_TOPICS: dict[str, dict[str, str]] = {
    **{name: {} for name in TOPICS},
    "cx-dead-letter": {},
    "cx-metrics": {"cleanup.policy": "compact"},
    # a transport between the two stages: the series table keeps what it carried
    "cx-partials": {"retention.ms": str(24 * 3600 * 1000)},
}
"""The topics the worker creates, if missing, with CX_PARTITIONS partitions (before any prefix)."""


def prepare_topics(settings: Settings) -> Settings:
    """Settings with the partition count the tables must have, after creating missing topics.

    Faust refuses table writes when a changelog and its source topic differ in partitions, so
    existing input topics decide; CX_PARTITIONS applies to the topics the worker creates.
    """
    from .broker import create_topics, partition_counts

    names = [settings.topic(name) for name in TOPICS]
    internal = [
        settings.topic("cx-partials"),
        *(f"{settings.topic_prefix}{settings.app_id}-{table}-changelog" for table in TABLES),
    ]
    counts = partition_counts(settings.broker, [*names, *internal])
    inputs = {counts[name] for name in names if name in counts}
    if len(inputs) > 1:
        found = ", ".join(f"{name}={counts[name]}" for name in names if name in counts)
        raise ValueError(
            f"the input topics must have one partition count (co-partitioned): {found}"
        )
    wanted = inputs.pop() if inputs else settings.partitions
    stale = [f"{name}={counts[name]}" for name in internal if counts.get(name, wanted) != wanted]
    if stale:
        raise ValueError(
            f"internal topics do not match the {wanted} input partitions ({', '.join(stale)}):"
            " start with a new CX_APP_ID, whose new consumer group reads the inputs from the start"
        )
    missing = {
        settings.topic(name): config
        for name, config in OWN_TOPICS.items()
        if settings.topic(name) not in counts
    }
    create_topics(settings.broker, missing, wanted, settings.replication_factor)
    return settings.with_overrides(partitions=wanted)


def run_worker(settings: Settings) -> None:
    """Run one worker until SIGINT or SIGTERM; an unreachable broker is a one-line error."""
    import click
    from aiokafka.errors import KafkaError

    from .broker import BrokerUnreachable
    from .logs import logging_config

    try:
        settings = prepare_topics(settings)
    except (BrokerUnreachable, KafkaError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    app = create_app(settings)
    worker = faust.Worker(
        app,
        loglevel=settings.log_level,
        logging_config=logging_config(settings.log_level),
        redirect_stdouts=False,
        quiet=True,
    )
    worker.execute_from_commandline()
