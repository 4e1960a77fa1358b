"""The Faust app: topics, tables, agents, timers and pages wiring the stages together.

Data flow (docs/contract.md sections 1-5):

  ticket-* / survey-answered --ingest (batches)--> tickets, surveys tables (RocksDB, changelogged)
        |                                          + per-partition windows (derived, in memory)
        |                                  --timer--> cx-partials (window totals per series
        v                                             and source partition, keyed by dimension)
  cx-dead-letter                           --merge-partials--> series table (changelogged)
                                                   --> /metrics and cx-metrics snapshots

Kafka's partitioning decides who does what: input partitions spread the tickets over workers,
and the cx-partials partition of a dimension decides the one worker that merges and exports it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import faust
import orjson
from faust.types.enums import ProcessingGuarantee
from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from ._core import AccountRules
from .account_health import HEALTH_TOPIC, HealthPublisher, Record, health_values
from .accounts import Totals, evaluation
from .broker import client_options
from .config import Settings
from .events import TOPICS
from .experience import EXPERIENCE_TOPIC
from .health import (
    BrokerProbe,
    HealthCollector,
    Readiness,
    StatusLog,
    consumer_lags,
    state_entries,
)
from .ingest import DEAD_LETTER_MAX_BYTES, BatchStates, Ingest, last_offset_of, send_changelog
from .memory import prepare_long_running_process, release_free_memory
from .partials import Messages, PartialsPublisher
from .pipeline import STATE_TABLES, Pipeline, TableName
from .revenue import (
    PARTIAL_KEY,
    Revenue,
    account_samples,
    as_of_instant,
    partial_message,
)
from .series import Series, Snapshots, Writes
from .store import ROCKSDB_OPTIONS, STORE_URL
from .transactions import PartitionLost, Transactions
from .transport import App

log = logging.getLogger("cx_stream")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""Prometheus text exposition format, which generate_latest() writes."""

TABLES = (*STATE_TABLES, "series")

MAX_BATCH_RECORDS = 2000
"""Records per fetch, and so per ingest batch."""

RECORD_BATCH_BYTES = 512 * 1024
"""The producer's record batches: an ingest batch's changelog records of one partition go in
one where they fit (Kafka takes about 1 MB). At aiokafka's default (16 KB), each further
record batch of a partition would wait for the one before it to be sent."""

MERGE_BATCH = 500
MERGE_WAIT = 0.01
"""The merging stage takes up to MERGE_BATCH cx-partials messages, or what came within
MERGE_WAIT seconds, at a time, and applies only the newest partial of each series among them."""

MEMORY_TRIM_INTERVAL = 30.0
"""Seconds between handing the allocator's free pages back to the system."""

STATUS_INTERVAL = 30.0
"""Seconds between the worker's status log lines."""


def faust_settings(settings: Settings) -> dict[str, Any]:
    options: dict[str, Any] = {
        "broker": settings.broker,
        "datadir": settings.data_dir,
        "store": STORE_URL,
        "topic_partitions": settings.partitions,
        "web_port": settings.web_port,
        "web_bind": settings.web_host,
        "consumer_auto_offset_reset": "earliest",
        # a fetch is ingested in one stretch: bound it, so pages and timers keep their turn
        "broker_max_poll_records": MAX_BATCH_RECORDS,
        "table_standby_replicas": 0,
        "topic_replication_factor": settings.replication_factor,
        "autodiscover": False,
        "producer_max_request_size": DEAD_LETTER_MAX_BYTES,
        "producer_max_batch_size": RECORD_BATCH_BYTES,
        "broker_credentials": settings.kafka_security.faust_credentials(),
    }
    # a heartbeat a tenth of the session apart (at most Kafka's default 3 s), so that a few
    # may be lost before the group gives up on a live worker
    options.update(
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=min(3.0, settings.session_timeout / 10),
    )
    if settings.embedded_broker:
        # its first group join waits for the rebalance timeout: keep start-up short
        options.update(
            broker_rebalance_timeout=6.0,
            broker_session_timeout=6.0,
            broker_heartbeat_interval=1.0,
        )
    return options


def create_app(settings: Settings) -> App:
    """The worker: its topics and tables, then each stage wired to them in the order the data
    flows. The stages are units of their own (ingest.py, partials.py, series.py, health.py);
    what is here is only how Faust runs them: agents, timers, pages and callbacks."""
    app = App(f"{settings.topic_prefix}{settings.app_id}", **faust_settings(settings))
    app.correct_end_offsets = settings.embedded_broker
    app.exactly_once = settings.processing_guarantee == "exactly_once"
    raw: dict[str, Any] = {
        "key_serializer": "raw",
        "value_serializer": "raw",
        "partitions": settings.partitions,
    }
    topics = Topics(
        kinds={settings.topic(name): name for name in (*TOPICS, EXPERIENCE_TOPIC)},
        inputs=app.topic(*(settings.topic(name) for name in (*TOPICS, EXPERIENCE_TOPIC)), **raw),
        dead_letter=app.topic(settings.topic("cx-dead-letter"), **raw),
        partials=app.topic(settings.topic("cx-partials"), **raw),
        metrics=app.topic(settings.topic("cx-metrics"), **raw),
        health=app.topic(settings.topic(HEALTH_TOPIC), **raw),
    )

    def table(name: str, **options: Any) -> Any:
        return app.Table(name, partitions=settings.partitions, options=ROCKSDB_OPTIONS, **options)

    # ingest reads and writes the state tables' bytes itself (JSON values, UTF-8 keys); the
    # series table holds JSON too (written with orjson: Faust's JSON codec cost the merging
    # stage a millisecond per partial, and it fell minutes behind a large backlog)
    states = {name: table(name, key_type=bytes, value_type=bytes) for name in STATE_TABLES}
    series_table = table("series", key_type=str, value_type=bytes)

    # *_created samples would only add noise to every scrape
    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry(auto_describe=False)
    # what Prometheus' Python client exports by default, so that memory, CPU, file descriptors
    # and collections can be watched and alerted on like any Python process's
    for collector in (ProcessCollector, PlatformCollector, GCCollector):
        collector(registry=registry)

    ingest = _ingest_stage(app, settings, topics, states, registry)
    send = _sender(ingest)
    _partials_stage(app, settings, ingest, send, topics.partials)
    _accounts_stage(app, settings, ingest, send, topics)
    snapshots = _merge_and_export_stage(app, settings, topics, series_table, registry)
    _health_stage(app, settings, topics, ingest, snapshots, registry)
    return app


@dataclass(frozen=True)
class Topics:
    """The worker's topics (Faust's), their names with CX_TOPIC_PREFIX."""

    kinds: dict[str, str]
    """Each topic the ingest reads -> its name without prefix: the input topics of the contract
    (ticket-opened, ...) and the internal experience topic (experience.py)."""
    inputs: Any
    dead_letter: Any
    partials: Any
    metrics: Any
    health: Any


def _owned_partitions(app: App, *topics: str) -> set[int]:
    return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic in topics}


def _ingest_stage(
    app: App,
    settings: Settings,
    topics: Topics,
    tables: dict[TableName, Any],
    registry: CollectorRegistry,
) -> Ingest:
    """Stage 1: input records a fetch at a time into the state tables and the windows; the
    windows restored after every recovery; old state forgotten."""
    states = BatchStates({name: table.data for name, table in tables.items()})
    pipeline = Pipeline(
        settings.windows,
        settings.ticket_rules(),
        states,
        settings.currency,
        settings.experience_horizon,
    )
    outcomes = Counter(
        "cx_events",
        "Input records processed since the worker started, by input topic and outcome:"
        " accepted, duplicate, anomaly or invalid (dead-lettered)",
        ["topic", "outcome"],
        registry=registry,
    )
    # every outcome of docs/contract.md section 3 exported as 0 from the start: a rate of
    # dead letters or anomalies in a healthy system is then 0, not "no data"
    for topic, kind in topics.kinds.items():
        for outcome in ("accepted", "duplicate", "anomaly", "invalid"):
            if kind in TOPICS:  # (not the internal experience topic)
                outcomes.labels(topic, outcome)
    dead_letter_failures = Counter(
        "cx_dead_letter_failures",
        "Invalid records that could not be sent to the dead-letter topic, by input topic",
        ["topic"],
        registry=registry,
    )
    for topic in topics.kinds:  # exported as 0 from the start, so that an increase shows
        dead_letter_failures.labels(topic)
    changelogs = {name: table.changelog_topic.get_topic_name() for name, table in tables.items()}
    # the changelog record batches go around Faust's producer, and so around its transactions:
    # exactly-once is the ingest's own (transactions.py)
    guarantee: Any = app.conf.processing_guarantee
    assert guarantee == ProcessingGuarantee.AT_LEAST_ONCE
    transactions = None
    if app.exactly_once:
        transactions = Transactions(
            app.conf.id,
            {
                **client_options(settings),
                "max_request_size": DEAD_LETTER_MAX_BYTES,
                "max_batch_size": RECORD_BATCH_BYTES,
            },
        )
        app.before_recovery = transactions.assign

        @app.on_before_shutdown.connect  # type: ignore[arg-type]
        async def stop_transactions(sender: Any, **kwargs: Any) -> None:
            await transactions.stop()

    ingest = Ingest(
        pipeline,
        states,
        app.producer,
        app.kafka_producer,
        changelogs,
        topics.kinds,
        topics.dead_letter.get_topic_name(),
        outcomes,
        dead_letter_failures,
        transactions,
        settings.topic(EXPERIENCE_TOPIC),
    )
    # the consumer hands records of the input topics to ingest a fetch at a time
    app.topics.add(topics.inputs)
    app.batch_topics = frozenset(topics.kinds)
    app.batch_handler = ingest.process

    @tables["tickets"].on_recover
    async def restore_windows() -> None:
        started = time.monotonic()
        partitions = _owned_partitions(app, *topics.kinds)
        try:
            await ingest.restore_windows(partitions, time.time())
        except Exception as error:
            # Faust ignores what a recovery callback raises: a worker without its windows
            # must stop, not process and checkpoint on top of them
            log.exception("could not restore the windows; stopping")
            await app.crash(error)
            return
        release_free_memory()  # what reading the state left behind
        log.info(
            "windows restored",
            extra={
                "partitions": sorted(partitions),
                **pipeline.restored,
                **state_entries(pipeline),
                "seconds": round(time.monotonic() - started, 3),
            },
        )

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def forget_revoked(sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        await ingest.revoke({tp.partition for tp in revoked if tp.topic in topics.kinds})

    @app.timer(settings.sweep_interval)
    async def retention_sweep() -> None:
        forgotten = await ingest.forget_expired(settings.retention_by_table)
        log.info("retention sweep", extra={"forgotten": forgotten, **state_entries(pipeline)})

    return ingest


Sender = Callable[[int, Any, Sequence[Record]], Awaitable[bool]]
"""Sends (key, value) records to a Faust topic on behalf of an input partition; False when
the partition turned out to be another worker's (nothing sent)."""


def _sender(ingest: Ingest) -> Sender:
    """Records derived from an input partition's state, to a topic: under exactly-once in a
    transaction of the partition's producer, between ingest batches, so that what they say was
    derived from committed state only."""
    transactions = ingest.transactions

    async def send(partition: int, topic: Any, records: Sequence[Record]) -> bool:
        if not records:
            return True
        if transactions is None:
            for key, value in records:
                await topic.send(key=key, value=value)
            return True
        name = topic.get_topic_name()

        async def write(producer: Any) -> None:
            for key, value in records:
                await producer.send(name, value, key=key)

        async with ingest.lock:
            try:
                await transactions.commit(partition, write, {})
            except PartitionLost:  # its new owner publishes them once it has restored them
                ingest.lose([partition])
                return False
        return True

    return send


def _partials_stage(
    app: App, settings: Settings, ingest: Ingest, send: Sender, partials: Any
) -> None:
    """Between the stages: every partition's changed window totals to cx-partials."""

    async def send_partials(partition: int, messages: Messages) -> None:
        await send(partition, partials, messages)

    publisher = PartialsPublisher(ingest.pipeline, send_partials)

    @app.timer(settings.publish_interval)
    async def publish_partials() -> None:
        await publisher.publish(time.time())


ACCOUNTS_STEP = 5000
"""Accounts evaluated between turns of the event loop: an evaluation of 100,000 accounts
takes a while, and batches, heartbeats and scrapes must not wait for all of it."""


def _accounts_stage(
    app: App, settings: Settings, ingest: Ingest, send: Sender, topics: Topics
) -> None:
    """Every input partition's accounts evaluated at each instant of the CX_ACCOUNT_INTERVAL
    grid (docs/contract.md 7.5), off the batches' path: their totals to cx-partials, the
    accounts whose health changed to cx-account-health."""
    rules = AccountRules(
        [spec.seconds for spec in settings.account_windows],
        settings.experience_lookback,
        dict(settings.health_weights),
    )
    evaluated: dict[int, float] = {}
    """The instant each partition was last evaluated at."""
    health = HealthPublisher()

    @app.timer(min(settings.account_interval / 4, 1.0))
    async def evaluate_accounts() -> None:
        as_of = as_of_instant(time.time(), settings.account_interval)
        for partition in list(evaluated):
            if partition not in ingest.pipeline.partitions:  # revoked
                del evaluated[partition]
                health.drop(partition)
        for partition in sorted(ingest.pipeline.partitions):
            if evaluated.get(partition) == as_of or not ingest.windows_restored:
                continue
            async with ingest.lock:  # between batches: the accounts as their last batch left them
                book = ingest.pipeline.accounts
                accounts = book.accounts(partition)
            totals = Totals(len(settings.account_windows))
            records: list[dict[str, Any]] = []
            for start in range(0, len(accounts), ACCOUNTS_STEP):
                step, healths = evaluation(accounts, as_of, rules, start, start + ACCOUNTS_STEP)
                totals.add(step)
                records += map(health_values, healths)
                await asyncio.sleep(0)
            if ingest.pipeline.accounts is not book or partition not in ingest.pipeline.partitions:
                continue  # revoked (or restored anew) meanwhile
            message = partial_message(partition, settings.partitions, as_of, totals)
            changed, digests = health.changes(partition, records, as_of)
            if not await send(partition, topics.health, changed):
                continue
            if not await send(partition, topics.partials, [(PARTIAL_KEY, message)]):
                continue
            health.sent(partition, digests)
            evaluated[partition] = as_of


def _merge_and_export_stage(
    app: App,
    settings: Settings,
    topics: Topics,
    series_table: Any,
    registry: CollectorRegistry,
) -> Snapshots:
    """Stage 2: the partials of the dimensions whose cx-partials partition this worker owns,
    merged, on /metrics and as cx-metrics snapshots."""

    def owned() -> set[int]:
        return _owned_partitions(app, topics.partials.get_topic_name())

    series = Series(
        settings.max_segment_values,
        [spec.name for spec in settings.windows],
        owned,
        business_hours=settings.business_hours is not None,
    )
    revenue = Revenue(settings.account_windows, settings.gross_margin, owned)
    snapshots = Snapshots(series, revenue, topics.metrics)
    store = series_table.data
    changelog = series_table.changelog_topic.get_topic_name()

    @series_table.on_recover
    async def series_restored() -> None:
        series.restored(
            value for partition in owned() for _, value in store.partition_items(partition)
        )

    @app.agent(topics.partials, name="merge-partials")
    async def merge_partials(stream: Any) -> None:
        async for events in stream.take_events(MERGE_BATCH, within=MERGE_WAIT):
            messages = []
            for event in events:
                message = event.message
                if message.key == PARTIAL_KEY:
                    revenue.apply(orjson.loads(message.value)["accounts"], message.partition)
                else:
                    messages.append((message.value, message.partition))
            await write_series(series.apply(messages))

    async def write_series(writes: Writes) -> None:
        """A run's table writes, a record batch per partition, like the state tables': to the
        changelog, then (once Kafka has them) to the store, with the changelog offset that
        recovery resumes from."""
        producer = app.kafka_producer()
        sent = await asyncio.gather(
            *(send_changelog(producer, changelog, via, entries) for via, entries in writes.items())
        )
        last_offsets = await asyncio.gather(*map(last_offset_of, sent))
        for (via, entries), last in zip(writes.items(), last_offsets, strict=True):
            store.write(via, entries, last)

    @app.timer(settings.snapshot_interval)
    async def publish_snapshots() -> None:
        await snapshots.publish(time.time())

    @app.page("/metrics")
    async def metrics_page(view: Any, request: Any) -> Any:
        accounts = revenue.latest()
        body = b"" if accounts is None else account_samples(accounts).encode()
        # aiohttp refuses a charset in content_type, so the exposition type goes in as a header
        page = series.exposition() + body + generate_latest(registry)
        return view.bytes(page, content_type=None, headers={"Content-Type": CONTENT_TYPE})

    return snapshots


def _health_stage(
    app: App,
    settings: Settings,
    topics: Topics,
    ingest: Ingest,
    snapshots: Snapshots,
    registry: CollectorRegistry,
) -> None:
    """How the worker is doing: lag, state kept and SLA targets on /metrics, readiness on
    /health, a status log line, and its memory handed back to the system."""
    pipeline = ingest.pipeline
    registry.register(
        HealthCollector(
            lambda: consumer_lags(app, set(topics.kinds)),
            lambda: state_entries(pipeline),
            settings.sla,
            settings.sla_clock,
        )
    )
    probe = BrokerProbe(client_options(settings))
    readiness = Readiness(app, probe, lambda: ingest.windows_restored)
    status = StatusLog(ingest.outcomes, STATUS_INTERVAL)

    @app.task
    async def probe_brokers() -> None:
        await probe.run()

    @app.timer(STATUS_INTERVAL)
    async def log_status() -> None:
        status.line(
            {
                "input_partitions": sorted(pipeline.partitions),
                "exported_series": snapshots.published,
                "state_entries": state_entries(pipeline),
            }
        )

    @app.timer(MEMORY_TRIM_INTERVAL)
    async def trim_memory() -> None:
        release_free_memory()  # freed by batches since: a backlog's churn is not kept resident

    @app.page("/health/live")
    async def liveness_page(view: Any, request: Any) -> Any:
        """The worker's event loop answers: a process to keep, not to restart."""
        return view.json({"status": "alive"})

    @app.page("/health/ready")
    async def readiness_page(view: Any, request: Any) -> Any:
        """Its numbers can be trusted now: route scrapes and traffic to it (503 otherwise)."""
        status, body = readiness.answer()
        return view.json(body, status=status)

    @app.page("/health")
    async def health_page(view: Any, request: Any) -> Any:
        """Readiness, with what the worker holds (kept for earlier users of /health)."""
        status, body = readiness.answer()
        body |= {
            "input_partitions": sorted(pipeline.partitions),
            "records": ingest.record_counts(),
            "exported_series": snapshots.series.row_count(),
            "state_entries": state_entries(pipeline),
        }
        return view.json(body, status=status)


OWN_TOPICS: dict[str, dict[str, str]] = {
    **{name: {} for name in TOPICS},
    "cx-dead-letter": {"max.message.bytes": str(DEAD_LETTER_MAX_BYTES)},
    # a transport between partitions: the accounts table keeps what it carried
    EXPERIENCE_TOPIC: {"retention.ms": str(7 * 24 * 3600 * 1000)},
    "cx-metrics": {"cleanup.policy": "compact"},
    HEALTH_TOPIC: {"cleanup.policy": "compact"},
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
    changelog_names = [f"{settings.topic_prefix}{settings.app_id}-{t}-changelog" for t in TABLES]
    internal = [settings.topic("cx-partials"), settings.topic(EXPERIENCE_TOPIC), *changelog_names]
    counts = partition_counts(settings, [*names, *internal])
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
    # the changelogs too, before Faust starts: Faust would make them as it joins the group,
    # and a group leader that assigned before its broker knew of one found it with no
    # partitions (PartitionsMismatch on every message, until its metadata refreshed)
    changelogs = {name: {"cleanup.policy": "compact"} for name in changelog_names}
    wanted_topics = {**{settings.topic(n): c for n, c in OWN_TOPICS.items()}, **changelogs}
    missing = {name: config for name, config in wanted_topics.items() if name not in counts}
    create_topics(settings, missing, wanted)
    return settings.with_overrides(partitions=wanted)


def run_worker(settings: Settings) -> None:
    """Run one worker until SIGINT or SIGTERM; an unreachable broker is a one-line error."""
    import click
    from aiokafka.errors import KafkaError

    from .broker import BrokerUnreachable
    from .logs import logging_config

    prepare_long_running_process()  # before Faust and RocksDB start their threads
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
