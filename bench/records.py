"""The records the benchmarks read: simulated helpdesk traffic, generated once and cached.

Generating a million events with stream.simulate.Traffic takes about a minute, so each record
set is written to a cache file keyed by its kind, size, seed and a hash of the generators'
source. Event times are shifted on load so that the newest record is "now": a cache made
yesterday gives the same windows as a fresh one.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

import stream.simulate
from stream.events import TOPICS
from stream.simulate import EVENTS_PER_TICKET, Record, Traffic, business_hours_factor

from .progress import say

HISTORY_SECONDS = 27 * 86400.0
"""~28 days of history: 1h, 24h, 7d and 28d differ, and nothing leaves the 28d window for a
day, so numbers compared before and after a restart cannot drift by expiry."""

GENERATION_STEP_SECONDS = 86400.0
"""The simulator is advanced a day at a time, so only a day of scheduled events is in memory."""

CACHE_FORMAT = 1


def _generator_fingerprint() -> str:
    """Part of every cache key: a changed simulator (or this file) must not be served from an
    old cache."""
    digest = hashlib.sha256(Path(stream.simulate.__file__).read_bytes())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:10]


def rfc3339(moment: float) -> str:
    text = datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def _shifted(value: bytes, seconds: float) -> bytes:
    fields = orjson.loads(value)
    moment = datetime.fromisoformat(fields["occurred_at"]).timestamp() + seconds
    fields["occurred_at"] = rfc3339(moment)
    return orjson.dumps(fields)


def _write_cache(path: Path, generated_at: float, records: list[Record]) -> None:
    partial = path.with_suffix(".partial")
    with open(partial, "wb") as out:
        out.write(f"# generated_at={generated_at!r}\n".encode())
        for topic, key, value in records:
            out.write(b"\t".join((topic.encode(), key, value)) + b"\n")
    partial.replace(path)  # never leave a half-written cache under the real name


def _read_cache(path: Path) -> tuple[float, list[Record]]:
    with open(path, "rb") as source:
        header = source.readline().decode()
        generated_at = float(header.split("=", 1)[1])
        records: list[Record] = []
        for line in source:
            topic, key, value = line.rstrip(b"\n").split(b"\t", 2)
            records.append((topic.decode(), key, value))
    return generated_at, records


def cached(
    cache_dir: Path, kind: str, size: int, seed: int, build: Callable[[float], list[Record]]
) -> list[Record]:
    """Records of `kind` from the cache, or built (for `now`) and cached; times rebased to now."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{kind}-{size}-seed{seed}-{_generator_fingerprint()}-v{CACHE_FORMAT}.tsv"
    now = time.time()
    if not path.exists():
        say(f"generating {kind} records (size {size:,}, seed {seed}); cached in {path}")
        started = time.monotonic()
        _write_cache(path, now, build(now))
        say(f"generated in {time.monotonic() - started:.0f}s")
    generated_at, records = _read_cache(path)
    age = now - generated_at
    if age > 60:  # windows are 1h wide at the smallest: a minute's drift does not matter
        say(f"shifting {len(records):,} cached {kind} records {age / 3600:.1f}h forward to now")
        records = [(topic, key, _shifted(value, age)) for topic, key, value in records]
    return records


def _mean_arrival_factor(start: float, end: float) -> float:
    samples = [business_hours_factor(moment) for moment in range(int(start), int(end), 600)]
    return sum(samples) / len(samples)


def _simulated(rate: float, seed: int, start: float, now: float) -> Iterator[Record]:
    """Traffic of `rate` events/s at peak between `start` and `now`, advanced a day at a time."""
    traffic = Traffic(events_per_second=rate, seed=seed, duplicates=0.01)
    traffic.backfill(start, start)
    step_end = start
    while step_end < now:
        step_end = min(step_end + GENERATION_STEP_SECONDS, now)
        yield from traffic.due(step_end)


def _peak_rate_for(events: float, start: float, now: float) -> float:
    """The simulator's peak rate that yields about `events` events (its first guess)."""
    return events / ((now - start) * _mean_arrival_factor(start, now))


def mixed_backlog(events: int, seed: int, cache_dir: Path) -> list[Record]:
    """`events` simulated records of every kind over ~27 days, ending now, in time order."""

    def build(now: float) -> list[Record]:
        start = now - HISTORY_SECONDS
        rate = _peak_rate_for(events, start, now)
        while True:
            records = list(_simulated(rate, seed, start, now))
            if len(records) >= events:
                # keep the newest: the history still ends now, the oldest few hours go
                return records[-events:]
            rate *= 1.05 * events / max(len(records), 1)

    return cached(cache_dir, "mixed", events, seed, build)


def _moves_metrics(topic: str, fields: dict[str, object], replies: dict[str, int]) -> bool:
    """Whether an event can change a metric: every opening, resolution and survey, and the two
    earliest public agent replies of a ticket (first response, one-touch)."""
    if topic != "ticket-replied":
        return True
    if fields.get("author") != "agent" or fields.get("public") is False:
        return False
    ticket = str(fields["ticket_id"])
    replies[ticket] = replies.get(ticket, 0) + 1
    return replies[ticket] <= 2  # only the two earliest public agent replies are kept


def _ticket_heavy(records: Iterable[Record]) -> Iterator[Record]:
    """The records that can change a metric: the same numbers from far fewer events.

    Drops customer and bot replies, private notes, agent replies after the second and the
    simulator's duplicates. The worker's state is smaller than with all of the traffic by
    whatever it keeps per dropped event (an event-id digest each, since b11deb5).
    """
    replies: dict[str, int] = {}
    previous: Record | None = None
    for record in records:
        if record == previous:
            continue
        previous = record
        if _moves_metrics(record[0], orjson.loads(record[2]), replies):
            yield record


def _ticket_number(key: bytes) -> int:
    return int(key.decode().rsplit("-", 1)[-1])


def ticket_heavy_records(tickets: int, seed: int, cache_dir: Path) -> list[Record]:
    """Ticket-heavy traffic: the events of the newest `tickets` tickets opened in ~27 days of
    simulated traffic that can change a metric (see _ticket_heavy).

    About 3.8 events per ticket (opened, up to two public agent replies, resolved for 90%,
    a survey for a third of those) instead of the simulator's ~6.3.
    """

    def build(now: float) -> list[Record]:
        start = now - HISTORY_SECONDS
        rate = 1.03 * _peak_rate_for(tickets * EVENTS_PER_TICKET, start, now)
        while True:
            kept = list(_ticket_heavy(_simulated(rate, seed, start, now)))
            opened = sum(1 for topic, _, _ in kept if topic == "ticket-opened")
            if opened >= tickets:
                # ticket numbers follow opening order: the newest `tickets` have the top ones
                first = opened - tickets + 1
                return [record for record in kept if _ticket_number(record[1]) >= first]
            rate *= 1.05 * tickets / max(opened, 1)

    return cached(cache_dir, "tickets", tickets, seed, build)


SCRAPE_CHANNELS = 10
SCRAPE_PRIORITIES = ("low", "normal", "high", "urgent")


def scrape_ticket(number: int, now: float, teams: int) -> Record:
    """A ticket opened `now` in one of the scrape's segments: any `teams` consecutive numbers
    cover every team, channel and priority (`teams` at least SCRAPE_CHANNELS)."""
    team, channel = number % teams, number % SCRAPE_CHANNELS
    ticket = f"SCRAPE-LIVE-{number:06d}"
    value = {
        "event_id": f"{ticket}-0",
        "ticket_id": ticket,
        "occurred_at": rfc3339(now),
        "team": f"team-{team:02d}",
        "channel": f"channel-{channel}",
        "priority": SCRAPE_PRIORITIES[number % len(SCRAPE_PRIORITIES)],
    }
    return ("ticket-opened", ticket.encode(), orjson.dumps(value))


def scrape_records(now: float, teams: int) -> list[Record]:
    """One ticket per team x channel x priority, answered, resolved and surveyed in the last hour,
    so every series of every window has every metric (quantiles and ratios included)."""
    records: list[Record] = []
    combinations = itertools.product(range(teams), range(SCRAPE_CHANNELS), SCRAPE_PRIORITIES)
    for number, (team, channel, priority) in enumerate(combinations):
        ticket = f"SCRAPE-{number:05d}"
        opened = now - 3000 + number % 2400  # all within the last hour
        segment = {"team": f"team-{team:02d}", "channel": f"channel-{channel}"}
        survey, top = (("nps", 10), ("csat", 5), ("ces", 7))[number % 3]
        events: list[tuple[str, float, dict[str, object]]] = [
            ("ticket-opened", opened, {**segment, "priority": priority}),
            ("ticket-replied", opened + 60 + number % 300, {"author": "agent", "public": True}),
            ("ticket-resolved", opened + 400 + number % 500, {}),
            (
                "survey-answered",
                opened + 500,
                {**segment, "survey": survey, "score": number % top + 1},
            ),
        ]
        for kind, (topic, at, fields) in enumerate(events):
            value = {
                "event_id": f"{ticket}-{kind}",
                "ticket_id": ticket,
                "occurred_at": rfc3339(at),
                **fields,
            }
            if topic == "survey-answered":
                value["priority"] = priority
            records.append((topic, ticket.encode(), orjson.dumps(value)))
    return records


LEADERS_TIMEOUT_MS = 30_000
"""How long created topics may take until every partition's leader answers."""


async def _create_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1) for name in names])
    finally:
        await admin.close()
    # until every partition's leader answers (its end offset): Kafka lists a new partition's
    # leader a moment before that broker serves it, and answers sends meanwhile with
    # NotLeaderForPartition, which the producer retries and logs, a line per partition
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=LEADERS_TIMEOUT_MS)
    await consumer.start()
    try:
        await consumer.end_offsets(
            [TopicPartition(name, partition) for name in names for partition in range(partitions)]
        )
    finally:
        await consumer.stop()


def create_input_topics(bootstrap: str, prefix: str, partitions: int) -> None:
    """The four input topics with the partition count the worker will use (it adopts theirs),
    each partition with its leader. Plain aiokafka: stream.broker's helpers are the worker's,
    and change with it."""
    asyncio.run(_create_topics(bootstrap, [prefix + topic for topic in TOPICS], partitions))


async def _produce(bootstrap: str, prefix: str, records: Iterable[Record]) -> None:
    # large batches and a linger: this is loading a backlog, not measuring the producer
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=50, max_batch_size=512 * 1024
    )
    await producer.start()
    try:
        pending = []
        for topic, key, value in records:
            pending.append(await producer.send(prefix + topic, key=key, value=value))
            if len(pending) >= 20000:
                await asyncio.gather(*pending)  # surfaces a failed send, bounds memory
                pending.clear()
        await producer.flush()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def produce(bootstrap: str, prefix: str, records: list[Record]) -> float:
    """Send `records` to the prefixed topics, waiting for every ack; returns the seconds taken."""
    started = time.monotonic()
    asyncio.run(_produce(bootstrap, prefix, records))
    return time.monotonic() - started


def load(bootstrap: str, prefix: str, records: list[Record], partitions: int) -> None:
    """The input topics created with `partitions` (before any record: Kafka would create a
    topic a producer sends to with one partition, and the worker would follow it), then
    `records` sent to them."""
    create_input_topics(bootstrap, prefix, partitions)
    seconds = produce(bootstrap, prefix, records)
    say(f"produced {len(records):,} records to {prefix}* in {seconds:.1f}s")
