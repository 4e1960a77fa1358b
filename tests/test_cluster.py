"""Three Apache Kafka brokers, one killed with SIGKILL in the middle of a stream and brought back:
both workers keep going and every published number ends exact.

The fault Kafka's own system tests kill first. The cluster is KRaft, three combined brokers and
controllers; every topic (inputs, changelogs, cx-partials, outputs, committed offsets) has three
replicas and min.insync.replicas=2, and every producer (this test's and the workers', Faust's
default) waits for all in-sync replicas (acks=all), so nothing acknowledged is lost while one
broker is down.

The broker killed is the workers' group coordinator: their membership, heartbeats and offset
commits go through it, and it leads partitions of every topic they read and write (the test
checks that it leads input and changelog partitions). It is killed right after a chunk of
events was produced, while the workers process it; more chunks follow while it is down, and
the workers must reach the exact numbers of everything produced so far without it. Brought
back on its storage, it catches up, and a preferred leader election gives it its partitions
(and the coordinator) back, so the rest of the stream goes through the restarted broker.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from stream.apache_kafka import ApacheKafka, run_java
from stream.broker import create_topics
from stream.config import Settings
from stream.events import TOPICS
from tests.kafka import (
    TOPIC_PARTITIONS,
    WorkerProcess,
    event_records,
    read_topic,
    split,
    wait_for,
    wait_until_exact,
    wait_until_snapshots_exact,
)
from tests.oracle import Event
from tests.scenario import delivery, scenario

pytestmark = pytest.mark.broker

REPLICAS = 3
MIN_INSYNC = 2
GROUP = "cx-stream"
"""The workers' consumer group (CX_APP_ID, no prefix: the cluster is the test's own)."""
CHANGELOGS = tuple(f"{GROUP}-{table}-changelog" for table in ("tickets", "surveys", "series"))
OWN_TOPICS = (*TOPICS, "cx-dead-letter", "cx-metrics", "cx-partials", *CHANGELOGS)
CHUNKS = 8
KILLED_AFTER = 3
"""Chunks produced before the kill, which comes right after the last of them."""
RESTARTED_AFTER = 6
"""Chunks produced before the broker is back (three while it is down)."""

Produced = tuple[str, bytes | None, bytes | None]
Placement = dict[tuple[str, int], tuple[int, list[int]]]
"""(topic, partition) -> its leader and in-sync replicas."""


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ApacheKafka]:
    properties = {"min.insync.replicas": str(MIN_INSYNC)}
    with ApacheKafka(tmp_path / "kafka", nodes=3, properties=properties) as running:
        yield running


@pytest.fixture
def cluster_workers(
    cluster: ApacheKafka, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[[str], WorkerProcess]]:
    """Workers of the cluster, creating every topic with three replicas; stopped by pid before
    the cluster stops, their logs and the brokers' last warnings printed when the test failed."""
    started: list[WorkerProcess] = []

    def start(name: str) -> WorkerProcess:
        worker = WorkerProcess(
            cluster.url,
            tmp_path,
            name,
            CX_REPLICATION_FACTOR=str(REPLICAS),
            CX_MAX_SEGMENT_VALUES="3",
        ).start()
        started.append(worker)
        return worker

    yield start
    # all at once, so that they stop in parallel
    for worker in started:
        if worker.process is not None and worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)
    failed = getattr(request.node, "rep_call", None)
    for worker in started:
        worker.stop()
        if failed is not None and failed.failed:
            print(f"--- {worker.log_path.name} ---\n{worker.log_tail()}")
    if failed is not None and failed.failed:
        for node in cluster.cluster:
            lines = node.log_path.read_text(errors="replace").splitlines()
            warnings = [line[:300] for line in lines if "] WARN " in line or "] ERROR " in line]
            print(f"--- {node.log_path} ---\n" + "\n".join(warnings[-20:]))


def test_workers_stay_exact_when_a_broker_of_three_dies_and_comes_back(
    cluster: ApacheKafka, cluster_workers: Callable[[str], WorkerProcess]
) -> None:
    started = time.monotonic()
    timeline: list[str] = []

    def note(what: str) -> None:
        timeline.append(f"{time.monotonic() - started:6.1f}s {what}")
        print(timeline[-1])

    events = scenario(909, time.time(), tickets=500)
    delivered = delivery(events, 909)
    chunks = [delivered[index::CHUNKS] for index in range(CHUNKS)]
    # the input topics as an operator makes them, before any producer: three replicas
    create_topics(
        Settings(broker=cluster.url, replication_factor=REPLICAS),
        {topic: {} for topic in TOPICS},
        TOPIC_PARTITIONS,
    )
    first, second = cluster_workers("first"), cluster_workers("second")
    both = [first, second]
    wait_for(lambda: split(first, second), 120, "the partitions to split between the workers")
    replication = wait_for(lambda: topic_replication(cluster.bootstrap), 30, "every topic")
    wrong = {
        topic: found
        for topic, found in replication.items()
        if found != ({REPLICAS}, str(MIN_INSYNC))
    }
    assert not wrong, f"(replicas of each partition, min.insync.replicas) not (3, 2): {wrong}"
    note(f"both workers own input partitions; {len(replication)} topics with 3 replicas, min 2")

    acknowledged: dict[tuple[str, int, int], bytes | None] = {}

    def produce(chunk: Sequence[Event]) -> None:
        records = event_records(list(chunk), "")
        sending = time.monotonic()
        for record, place in zip(records, send_acked(cluster.bootstrap, records), strict=True):
            acknowledged[place] = record[2]
        note(f"{len(records)} records acknowledged in {time.monotonic() - sending:.1f}s")

    def so_far(count: int) -> list[Event]:
        sent = {fields["event_id"] for chunk in chunks[:count] for _, fields in chunk}
        return [event for event in events if event[1]["event_id"] in sent]

    for chunk in chunks[: KILLED_AFTER - 1]:
        produce(chunk)
    exact(both, so_far(KILLED_AFTER - 1), 120)
    note("exact before the kill")

    produce(chunks[KILLED_AFTER - 1])
    victim = coordinator(cluster.bootstrap)
    led = placement(cluster.bootstrap, OWN_TOPICS)
    for topics in (TOPICS, CHANGELOGS[:2]):
        leads = [led[topic, p][0] == victim for topic in topics for p in range(TOPIC_PARTITIONS)]
        assert any(leads), f"node {victim} leads no partition of {topics}"
    controller = active_controller(cluster)
    cluster.kill(victim)  # while the workers process the chunk just produced
    note(
        f"killed node {victim}: the group coordinator, leader of {leading(led, victim)} of"
        f" {len(led)} partitions, {'and' if controller == victim else 'not'} the active controller"
    )

    for chunk in chunks[KILLED_AFTER:RESTARTED_AFTER]:
        produce(chunk)
    exact(both, so_far(RESTARTED_AFTER), 180)
    assert not cluster.node(victim).alive
    note("exact with one broker down")

    cluster.start_node(victim)
    cluster.wait_until_serving(brokers=3)
    note(f"node {victim} serving again")
    wait_for(
        lambda: all(len(isr) == REPLICAS for _, isr in placement(cluster.bootstrap).values()),
        120,
        "every replica in sync again",
    )
    note("every replica in sync")
    run_java(
        "org.apache.kafka.tools.LeaderElectionCommand",
        "--bootstrap-server",
        cluster.bootstrap,
        "--election-type",
        "PREFERRED",
        "--all-topic-partitions",
    )
    back = wait_for(
        lambda: leading(placement(cluster.bootstrap, OWN_TOPICS), victim),
        60,
        "the restarted broker to lead partitions again",
    )
    now_coordinating = coordinator(cluster.bootstrap)
    note(f"node {victim} leads {back} partitions again; group coordinator: {now_coordinating}")

    for chunk in chunks[RESTARTED_AFTER:]:
        produce(chunk)
    exact(both, events, 180)
    note("exact after the restart")

    assert split(first, second)
    assert read_topic(cluster.bootstrap, "cx-dead-letter") == []
    # nothing acknowledged was lost: every record is where its acknowledgement put it
    stored = {
        (record.topic, record.partition, record.offset): record.value
        for topic in TOPICS
        for record in read_topic(cluster.bootstrap, topic)
    }
    assert {place: stored.get(place) for place in acknowledged} == acknowledged
    note(f"{len(stored) - len(acknowledged)} records stored twice by the producer's retries")
    wait_until_snapshots_exact(cluster.bootstrap, "", events)
    assert_alive(both)


def exact(workers: list[WorkerProcess], events: list[Event], timeout: float) -> None:
    """Both workers' /metrics together equal the oracle (each series from one of them) within
    `timeout`, and neither exits meanwhile (checked every 15 s: a dead worker fails at once)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            wait_until_exact(workers, events, timeout=min(15.0, deadline - time.monotonic()))
            return
        except AssertionError:
            assert_alive(workers)
            if time.monotonic() < deadline - 1:
                continue
            raise


def assert_alive(workers: list[WorkerProcess]) -> None:
    for worker in workers:
        assert worker.process is not None
        code = worker.process.poll()
        assert code is None, f"{worker.log_path.name}: the worker exited with {code}"


def send_acked(bootstrap: str, records: Sequence[Produced]) -> list[tuple[str, int, int]]:
    """Send records, each acknowledged by every in-sync replica (aiokafka's default, acks=1,
    is the leader's word alone); the (topic, partition, offset) of each."""

    async def send() -> list[tuple[str, int, int]]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        await producer.start()
        try:
            futures = [await producer.send(topic, key=k, value=v) for topic, k, v in records]
            delivered = [await future for future in futures]
        finally:
            await producer.stop()
        return [(meta.topic, meta.partition, meta.offset) for meta in delivered]

    return asyncio.run(send())


async def _admin(bootstrap: str) -> Any:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    return admin


def topic_replication(bootstrap: str) -> dict[str, tuple[set[int], str]] | None:
    """Every topic's replica counts (over its partitions) and min.insync.replicas, once every
    topic the workers use exists."""

    async def read() -> dict[str, tuple[set[int], str]] | None:
        admin = await _admin(bootstrap)
        try:
            topics = {t["topic"]: t["partitions"] for t in await admin.describe_topics()}
            if not set(OWN_TOPICS) <= set(topics):
                return None
            resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in topics]
            minimums = {
                resource["resource_name"]: entry["config_value"]
                for response in await admin.describe_configs(resources)
                for resource in response.to_object()["resources"]
                for entry in resource["config_entries"]
                if entry["config_names"] == "min.insync.replicas"
            }
        finally:
            await admin.close()
        return {
            topic: ({len(p["replicas"]) for p in partitions}, minimums.get(topic, "?"))
            for topic, partitions in topics.items()
        }

    return asyncio.run(read())


def placement(bootstrap: str, topics: Sequence[str] | None = None) -> Placement:
    """Leader and in-sync replicas of every partition of `topics` (default: all topics)."""

    async def read() -> Placement:
        admin = await _admin(bootstrap)
        try:
            described = await admin.describe_topics(None if topics is None else list(topics))
        finally:
            await admin.close()
        return {
            (t["topic"], p["partition"]): (p["leader"], p["isr"])
            for t in described
            for p in t["partitions"]
        }

    return asyncio.run(read())


def leading(led: Placement, node: int) -> int:
    """How many of the partitions `node` leads."""
    return sum(leader == node for leader, _ in led.values())


def coordinator(bootstrap: str) -> int:
    """The node coordinating the workers' consumer group."""

    async def find() -> int:
        admin = await _admin(bootstrap)
        try:
            node: int = await admin.find_coordinator(GROUP)
            return node
        finally:
            await admin.close()

    return asyncio.run(find())


def active_controller(cluster: ApacheKafka) -> int | None:
    """The node that last became the active KRaft controller, from the nodes' logs."""
    became = [
        (int(epoch), node.node_id)
        for node in cluster.cluster
        for epoch in re.findall(
            r"Becoming the active controller at epoch (\d+)",
            node.log_path.read_text(errors="replace"),
        )
    ]
    return max(became)[1] if became else None
