"""Real parts for integration tests: worker and CLI processes, a producer, /metrics and topic
readers."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import jsonschema_rs
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from stream.broker import create_topics, free_port, stop_process
from stream.config import Settings
from tests.oracle import Event, Expected, OpeningHours, assert_matches, expected

T = TypeVar("T")

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
"""The published JSON Schemas of the input topics and of cx-metrics snapshots."""

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
LABELS = ("window", "team", "channel", "priority")
TOPIC_PARTITIONS = 4
"""Partitions of every topic of a test (CX_PARTITIONS of its workers)."""
QUANTILE_SUFFIX = {"0.5": "_p50", "0.9": "_p90"}


class WorkerProcess:
    """`cx-stream worker` as a child process, logging to a file, stopped by its pid."""

    def __init__(self, broker_url: str, workdir: Path, name: str, **env: str) -> None:
        self.port = free_port()
        self.log_path = workdir / f"{name}.log"
        self.env = {
            **os.environ,
            "CX_BROKER": broker_url,
            # a killed worker's partitions move after 6 s (the broker's least), not 45
            "CX_KAFKA_SESSION_TIMEOUT": "6s",
            "CX_WEB_HOST": "127.0.0.1",
            "CX_WEB_PORT": str(self.port),
            "CX_DATA_DIR": str(workdir / name),
            "CX_SNAPSHOT_INTERVAL": "1",
            "CX_PARTITIONS": str(TOPIC_PARTITIONS),
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "stream", "worker"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        """SIGKILL: no flush, no commit, no goodbye to the group."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=15)

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def samples(self) -> Samples:
        return self.scrape(self.url)

    @staticmethod
    def scrape(url: str) -> Samples:
        """/metrics parsed with prometheus-client's own text parser."""
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
            text = response.read().decode()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }


def as_a_background_job() -> None:
    """For `preexec_fn`: start a command with SIGINT ignored, as a shell script's `command &`
    does (and so CI, when it runs the suite in the background)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def children(pid: int) -> set[int]:
    found = set()
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:  # the parent pid
            found.add(int(status.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def kill_demo(demo: subprocess.Popen[bytes]) -> None:
    """Stop a demo that did not stop on Ctrl-C, with its broker and worker: they run in sessions
    of their own, out of reach of the demo's process group (seen left running after a CI run)."""
    for pid in children(demo.pid):
        os.kill(pid, signal.SIGKILL)
    os.killpg(demo.pid, signal.SIGKILL)
    demo.wait()


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.5) -> T:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (OSError, AssertionError) as error:
            last_error = error
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last error: {last_error}")


class Record(NamedTuple):
    topic: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


def create_topic(bootstrap: str, topic: str, **config: str) -> None:
    """Create a topic (TOPIC_PARTITIONS partitions) with topic configs, as an operator would
    before the workers start; e.g. max_message_bytes="2097152"."""
    configs = {name.replace("_", "."): value for name, value in config.items()}
    create_topics(Settings(broker=f"kafka://{bootstrap}"), {topic: configs}, TOPIC_PARTITIONS)


def send_records(
    bootstrap: str, records: Sequence[Record], max_request_size: int = 1024 * 1024
) -> list[tuple[int, int]]:
    """Send records as they are and wait until the broker has them all; returns the (partition,
    offset) of each. A record with neither key nor value, which aiokafka's send() refuses (a
    Java producer sends it), goes in a batch of its own to a partition chosen by its position.

    Topics that do not exist yet are created first with the tests' TOPIC_PARTITIONS, as an
    operator creates the input topics: Kafka would create a topic a producer names with its
    num.partitions (1), and a worker started later follows the partition count it finds."""
    create_topics(
        Settings(broker=f"kafka://{bootstrap}"),
        {record.topic: {} for record in records},
        TOPIC_PARTITIONS,
    )

    async def send() -> list[tuple[int, int]]:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, linger_ms=5, max_request_size=max_request_size
        )
        await producer.start()
        try:
            futures = []
            for index, record in enumerate(records):
                headers = list(record.headers)
                if record.key is None and record.value is None:
                    batch = producer.create_batch()
                    batch.append(key=None, value=None, timestamp=None, headers=headers)
                    partitions = sorted(await producer.partitions_for(record.topic))
                    partition = partitions[index % len(partitions)]
                    futures.append(
                        await producer.send_batch(batch, record.topic, partition=partition)
                    )
                else:
                    futures.append(
                        await producer.send(
                            record.topic, key=record.key, value=record.value, headers=headers
                        )
                    )
            await producer.flush()
            delivered = [await future for future in futures]
            return [(metadata.partition, metadata.offset) for metadata in delivered]
        finally:
            await producer.stop()

    return asyncio.run(send())


def produce(bootstrap: str, records: Sequence[tuple[str, bytes | None, bytes | None]]) -> None:
    """Send (topic, key, value) records and wait until the broker has them all."""
    send_records(bootstrap, [Record(topic, key, value) for topic, key, value in records])


def event_records(events: list[Event], prefix: str) -> list[tuple[str, bytes | None, bytes | None]]:
    """Events as producers key them: by ticket_id, or a survey's event_id when it has none."""
    return [
        (
            prefix + topic,
            str(fields.get("ticket_id", fields["event_id"])).encode(),
            orjson.dumps(fields),
        )
        for topic, fields in events
    ]


def read_topic(bootstrap: str, topic: str) -> list[Any]:
    """Every record of `topic`, from the beginning to its current end."""

    async def read() -> list[Any]:
        # committed records only, as a downstream service reads them (with exactly-once, a
        # crashed transaction's dead letters are never read)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed"
        )
        await consumer.start()
        try:
            # a fresh metadata answer: the consumer's own has only the topics it subscribed to
            cluster = await consumer._client.fetch_all_metadata()
            partitions = [
                TopicPartition(topic, p) for p in cluster.partitions_for_topic(topic) or ()
            ]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            records: list[Any] = []

            async def behind() -> bool:
                return any([await consumer.position(tp) < end for tp, end in ends.items()])

            while await behind():
                batch = await consumer.getmany(timeout_ms=1000)
                for messages in batch.values():
                    records.extend(messages)
            return records
        finally:
            await consumer.stop()

    return asyncio.run(read())


def dead_letters(bootstrap: str, topic: str) -> dict[tuple[str, int, int], Any]:
    """The records of dead-letter topic `topic`, by the (topic, partition, offset) their
    cx-source headers point at."""
    found = {}
    for letter in read_topic(bootstrap, topic):
        headers = dict(letter.headers)
        source = (
            headers["cx-source-topic"].decode(),
            int(headers["cx-source-partition"]),
            int(headers["cx-source-offset"]),
        )
        assert source not in found, f"dead-lettered twice: {source}"
        found[source] = letter
    return found


def assert_dead_lettered(letter: Any, record: Record) -> str:
    """`letter` is `record` intact (key, value, headers) plus the four cx- headers, with a
    bounded cx-error; returns the cx-error."""
    assert letter.key == record.key
    assert letter.value == record.value
    original = len(record.headers)
    assert tuple(letter.headers[:original]) == record.headers
    added = dict(letter.headers[original:])
    assert list(added) == ["cx-error", "cx-source-topic", "cx-source-partition", "cx-source-offset"]
    reason: str = added["cx-error"].decode()
    assert 0 < len(reason) <= 300, reason
    return reason


def worker_log(worker: WorkerProcess) -> list[dict[str, Any]]:
    """The worker's JSON log lines, parsed."""
    return [
        orjson.loads(line)
        for line in worker.log_path.read_bytes().splitlines()
        if line.startswith(b"{")
    ]


def series_of(
    samples: Samples,
) -> tuple[dict[tuple[str, ...], dict[str, float]], dict[tuple[str, ...], float]]:
    """/metrics samples as {(window, team, channel, priority): {name: value}}, and backlog."""
    series: dict[tuple[str, ...], dict[str, float]] = defaultdict(dict)
    backlog = {}
    for (name, label_items), value in samples.items():
        labels = dict(label_items)
        if name == "cx_tickets_open":
            backlog[tuple(labels[key] for key in LABELS[1:])] = value
        elif name.startswith("cx_") and "team" in labels:  # (the account numbers have none)
            metric = name[3:] + QUANTILE_SUFFIX.get(labels.get("quantile", ""), "")
            series[tuple(labels[key] for key in LABELS)][metric] = value
    return series, backlog


def mismatch(samples: Samples, want: Expected) -> str | None:
    series, backlog = series_of(samples)
    if set(series) != set(want.series):
        return f"series differ: missing {set(want.series) - set(series)}, extra {set(series) - set(want.series)}"
    try:
        for labels, metrics in want.series.items():
            got = {name: series[labels].get(name) for name in metrics}  # absent: None
            try:
                assert_matches(got, metrics, str(labels))
            except AssertionError:
                differing = {
                    n: (got[n], metrics[n])
                    for n in metrics
                    if got[n] != metrics[n] and not isinstance(metrics[n], (list, float))
                }
                raise AssertionError(f"{labels}: (got, expected) {differing}") from None
        assert backlog == {labels: float(n) for labels, n in want.tickets_open.items()}, "backlog"
    except AssertionError as error:
        return str(error)
    return None


def processed(worker: WorkerProcess) -> float:
    return sum(value for (name, _), value in worker.samples().items() if name == "cx_events_total")


def wait_until_exact(
    workers: list[WorkerProcess],
    events: list[Event],
    timeout: float = 90,
    hours: OpeningHours | None = None,
    sla_clock: str = "calendar",
) -> Samples:
    """Wait until the union of the workers' /metrics equals the oracle; each series exactly once."""
    failure: list[str | None] = [None]

    def check() -> Samples | None:
        merged: Samples = {}
        for worker in workers:
            # the (window, segment) series; process-level ones (events, lag, SLA targets) are per worker
            samples = {
                key: value for key, value in worker.samples().items() if "team" in dict(key[1])
            }
            overlap = set(merged) & set(samples)
            assert not overlap, f"exported by two workers: {sorted(overlap)[:3]}"
            merged |= samples
        want = expected(events, time.time(), cap=3, hours=hours, sla_clock=sla_clock)
        failure[0] = mismatch(merged, want)
        return merged if failure[0] is None else None

    try:
        return wait_for(check, timeout, "the oracle's numbers")
    except AssertionError as error:
        raise AssertionError(f"{error}\nlast mismatch: {failure[0]}") from None


def split(*workers: WorkerProcess) -> bool:
    """Every input partition owned by exactly one of `workers`, and each of them owns some."""
    owned = [set(orjson.loads(http_get(w.url + "/health"))["input_partitions"]) for w in workers]
    everything = set().union(*owned)
    return all(owned) and sum(map(len, owned)) == len(everything) and everything == {0, 1, 2, 3}


def http_get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        body: bytes = response.read()
        return body


def assert_snapshots_match(bootstrap: str, prefix: str, want: Expected) -> None:
    """The latest cx-metrics snapshot of every series equals `want`, and its own schema."""
    validator = jsonschema_rs.validator_for(
        orjson.loads((SCHEMAS / "metrics-snapshot.schema.json").read_bytes())
    )
    latest: dict[str, dict[str, Any]] = {}
    for record in read_topic(bootstrap, prefix + "cx-metrics"):
        if record.key.startswith(b"accounts,"):
            continue  # the account numbers' snapshots (tests/test_accounts.py)
        if record.value is None:  # a tombstone: the series is gone
            latest.pop(record.key.decode(), None)
        else:
            latest[record.key.decode()] = orjson.loads(record.value)
    assert {tuple(key.split(",")) for key in latest} == {
        tuple(f"{n}={v}" for n, v in zip(LABELS, labels, strict=True)) for labels in want.series
    }
    for key, snapshot in latest.items():
        validator.validate(snapshot)
        labels = tuple(snapshot[name] for name in LABELS)
        assert_matches(snapshot, want.series[labels], key)
        assert snapshot["tickets_open"] == want.tickets_open[labels[1:]]


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`cx-stream ARGS` with only the environment given (and PATH), to its end."""
    return subprocess.run(
        [sys.executable, "-m", "stream", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **env},
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], mentions: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("cx-stream: error:") and mentions in lines[0], lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def wait_until_snapshots_exact(
    bootstrap: str,
    prefix: str,
    events: list[Event],
    timeout: float = 30,
    cap: int = 3,
    hours: OpeningHours | None = None,
) -> None:
    """Wait until the latest cx-metrics snapshot of every series equals the oracle (snapshots
    go out every CX_SNAPSHOT_INTERVAL, so the latest may still show an earlier state)."""
    import traceback

    failure: list[str | None] = [None]

    def check() -> bool:
        want = expected(events, time.time(), cap=cap, hours=hours)
        try:
            assert_snapshots_match(bootstrap, prefix, want)
        except AssertionError as error:  # a bare assert says nothing: name its line then
            failing = traceback.extract_tb(error.__traceback__)[-1]
            failure[0] = str(error) or f"{failing.name}: {failing.line}"
            return False
        return True

    try:
        wait_for(check, timeout, "the oracle's numbers in cx-metrics")
    except AssertionError as error:
        raise AssertionError(f"{error}\nlast mismatch: {failure[0]}") from None


def events_total(worker: WorkerProcess) -> dict[tuple[str, str], float]:
    """The worker's cx_events_total by (topic, outcome), leaving out zeros."""
    return {
        (dict(labels)["topic"], dict(labels)["outcome"]): value
        for (name, labels), value in worker.samples().items()
        if name == "cx_events_total" and value
    }


def produce_in_rounds(
    bootstrap: str,
    prefix: str,
    rounds: list[list[Event]],
    worker: WorkerProcess,
    already: int = 0,
    timeout: float = 90,
) -> None:
    """Send the rounds (tests.scenario.rounds) to `worker`, each once the worker has processed
    every record before it: `already` records, then each round sent. Returns when the last
    round is sent."""
    create_topics(
        Settings(broker=f"kafka://{bootstrap}"),
        {prefix + topic: {} for batch in rounds for topic, _ in batch},
        TOPIC_PARTITIONS,
    )

    def processed_or_none() -> float | None:
        try:
            return processed(worker)
        except OSError:  # not serving yet
            return None

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
        await producer.start()
        try:
            done = already
            for batch in rounds:
                deadline = time.monotonic() + timeout
                while await asyncio.to_thread(processed_or_none) != done:
                    assert time.monotonic() < deadline, f"{done} records not processed"
                    await asyncio.sleep(0.05)
                for topic, key, value in event_records(batch, prefix):
                    await producer.send(topic, key=key, value=value)
                await producer.flush()
                done += len(batch)
        finally:
            await producer.stop()

    asyncio.run(send())
