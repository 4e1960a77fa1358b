"""A real Prometheus (Debian's) scraping a real worker fed by the simulator: every expression
of every dashboard panel shows, for every segment, the values the oracle computes from the
traffic, and every rule works against what the processor exports."""

from __future__ import annotations

import json
import math
import random
import re
import time
import urllib.parse
import urllib.request
import zlib
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import orjson
import pytest
import yaml

from stream.apache_kafka import ApacheKafka
from stream.broker import free_port
from stream.simulate import Traffic
from tests.account_oracle import SubscriptionFields, expected_accounts
from tests.experience_oracle import expected_experience, experience_series
from tests.kafka import (
    LABELS,
    QUANTILE_SUFFIX,
    WorkerProcess,
    events_total,
    mismatch,
    processed,
    produce,
    wait_for,
)
from tests.oracle import (
    Event,
    Expected,
    OpeningHours,
    assert_matches,
    expected,
    outcomes,
    seconds,
)
from tests.servers import get_json, serving
from tests.test_dashboards import ACCOUNT_METRICS, ACCOUNT_WINDOWS

pytestmark = pytest.mark.broker
ROOT = Path(__file__).resolve().parent.parent
VARIABLES = {"$window": "24h", "$__rate_interval": "1m"}
SELECTOR = re.compile(r"\b(cx_[a-z0-9_]+|up|probe_success)\b(\{[^}]*\})?")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
TARGET_LABELS = {"instance", "job"}
PREFIX = "prometheus-"
OUTCOMES = ("accepted", "duplicate", "anomaly", "invalid")
"""docs/contract.md section 3: every one is exported for every input topic, 0 until seen."""
INPUT_TOPICS = (
    "ticket-opened",
    "ticket-replied",
    "ticket-resolved",
    "ticket-reopened",
    "survey-answered",
    "subscription-updated",
)


def query(base: str, expression: str, at: float | None = None) -> list[Any]:
    """An instant query, now or at Unix time `at` (Prometheus keeps milliseconds)."""
    parameters = {"query": expression} | ({} if at is None else {"time": f"{at:.3f}"})
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode(parameters)
    body = get_json(url)
    assert body["status"] == "success", (expression, body)
    result: list[Any] = body["data"]["result"]
    return result


SUCCESS = ROOT / "grafana/dashboards/customer-success.json"


def dashboard_expressions(segment: str) -> list[tuple[str, str]]:
    """The wall's and the analyst's (the customer-success dashboard: success_expressions())."""
    found = []
    for path in sorted((ROOT / "grafana/dashboards").glob("*.json")):
        if path == SUCCESS:
            continue
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                expression = target["expr"].replace("$segment", segment)
                for name, value in VARIABLES.items():
                    expression = expression.replace(name, value)
                found.append((f"{path.name}: {panel['title']}", expression))
    return found


def success_expressions() -> list[tuple[str, str]]:
    """The customer-success dashboard's expressions, for every account window it offers."""
    board = json.loads(SUCCESS.read_text())
    (variable,) = board["templating"]["list"]
    windows = [option["value"] for option in variable["options"]]
    assert windows == list(ACCOUNT_WINDOWS)
    found = []
    for window in windows:
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                if "$window" in target["expr"] or window == windows[0]:
                    where = f"{panel['title']} ({window})"
                    found.append((where, target["expr"].replace("$window", window)))
    return found


def segment_options(base: str) -> dict[str, str]:
    """The analyst dashboard's segment choices (text -> value) as Grafana 11 makes them from a
    query_result() variable: each result printed as `{label="value",...} value time` (labels in
    Prometheus's sorted order), then the variable's regex picks text and value."""
    board = json.loads((ROOT / "grafana/dashboards/analyst.json").read_text())
    variable = next(v for v in board["templating"]["list"] if v["name"] == "segment")
    inner = re.fullmatch(r"query_result\((.*)\)", variable["query"]["query"], re.DOTALL)
    assert inner
    pattern = re.compile(variable["regex"].strip("/").replace("(?<", "(?P<"))
    options = {}
    for sample in query(base, inner.group(1)):
        labels = ",".join(f'{name}="{value}"' for name, value in sample["metric"].items())
        match = pattern.search(f"{{{labels}}} {sample['value'][1]} {sample['value'][0] * 1000}")
        assert match, labels
        options[match["text"]] = match["value"]
    return options


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((ROOT / "prometheus/rules/cx-stream.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


class Fed(NamedTuple):
    """The worker and what it was fed: the events, and the oracle's view of its settings."""

    worker: WorkerProcess
    events: list[Event]
    """In the order sent."""
    hours: OpeningHours
    made: float
    """When the traffic was made: its latest event time."""
    subscriptions: list[SubscriptionFields]
    """The distinct subscription events (some were sent twice)."""
    resent: int
    """Subscription events sent a second time."""

    def expected(self) -> Expected:
        return expected(self.events, time.time(), hours=self.hours, sla_clock="business")

    def accounts(self, as_of: float) -> AccountSeries:
        """The oracle's section-7 series at `as_of`: 7.3's (tests/account_oracle.py) and 7.4's
        (tests/experience_oracle.py, with the default lookback and weights)."""
        experience = expected_experience(
            self.events,
            self.subscriptions,
            as_of,
            WINDOW_SECONDS,
            90 * DAY,
            {},
            self.hours,
            "business",
        )
        return account_series(self.subscriptions, as_of) | experience_series(experience)


DAY = 86400.0
WINDOW_SECONDS = {name: float(name.removesuffix("d")) * DAY for name in ACCOUNT_WINDOWS}
AccountSeries = dict[tuple[str, frozenset[tuple[str, str]]], float]
"""(metric, labels) -> value of every 7.3 series the worker exports; an absent ratio is not in."""
LABEL_OF = {"mrr_movements": "movement", "account_movements": "movement"}


def account_series(events: list[SubscriptionFields], as_of: float) -> AccountSeries:
    numbers = expected_accounts(events, as_of, WINDOW_SECONDS)
    found: AccountSeries = {("cx_account_metrics_as_of_seconds", frozenset()): as_of}
    for window, values in numbers.items():
        for name, value in values.items():
            if name in ("mrr", "accounts_paying", "arpa"):  # the same in every window
                labels: frozenset[tuple[str, str]] = frozenset()
            else:
                labels = frozenset({("window", window)})
            if isinstance(value, dict):
                for key, amount in value.items():
                    found[(f"cx_{name}", labels | {(LABEL_OF[name], key)})] = float(amount)
            elif value is not None:
                found[(f"cx_{name}", labels)] = float(value)
    return found


def subscription_histories(now: float, accounts: int, seed: int) -> list[SubscriptionFields]:
    """Accounts with one to three subscriptions over 400 days: trials that convert or lapse,
    upgrades, downgrades, pauses, cancellations and returns, some at one instant, so every
    movement kind falls in every window."""
    rng = random.Random(seed)
    events: list[SubscriptionFields] = []
    for number in range(accounts):
        account = f"ACC-{number:03d}"
        for sub in range(rng.randint(1, 3)):
            at = now - rng.uniform(5, 400) * DAY
            for change in range(rng.randint(1, 6)):
                events.append(
                    {
                        "event_id": f"{account}-{sub}-{change}",
                        "account_id": account,
                        "subscription_id": f"{account}-S{sub}",
                        "at": round(min(at, now - 60)),  # whole seconds: shared instants
                        "status": rng.choice(
                            ["active", "active", "trialing", "paused", "canceled"]
                        ),
                        "mrr": rng.choice([0, 29, 99, 249.5, 1200, 0.000001]),
                    }
                )
                at += rng.choice([0, 1, 7, 30, 90]) * DAY
    return events


def subscription_records(events: list[SubscriptionFields]) -> list[tuple[str, bytes, bytes]]:
    """As a billing system sends them: keyed by account, `occurred_at` in RFC 3339."""
    records = []
    for event in events:
        fields = {name: value for name, value in event.items() if name != "at"}
        fields["occurred_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(event["at"]))
        records.append(
            (PREFIX + "subscription-updated", event["account_id"].encode(), orjson.dumps(fields))
        )
    return records


def worker_account_series(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float],
) -> AccountSeries:
    return {
        (name, frozenset(labels)): value
        for (name, labels), value in samples.items()
        if name in ACCOUNT_METRICS
    }


def same(got: float, want: float) -> bool:
    """Amounts and counts exactly (sums of millionths), ratios and CLV to 1e-9 relative."""
    return abs(got - want) <= 1e-9 * max(1.0, abs(want))


def account_mismatch(got: AccountSeries, want: AccountSeries) -> str | None:
    if set(got) != set(want):
        return (
            f"series: missing {sorted(set(want) - set(got))}, extra {sorted(set(got) - set(want))}"
        )
    wrong = {key: (got[key], value) for key, value in want.items() if not same(got[key], value)}
    return f"(got, expected) {wrong}" if wrong else None


GAP = (-120.0, 720.0)
"""No event is sent from 2 minutes before to 12 minutes after an hour before the traffic was
made: the 1h window's lower edge (blurred by a bucket, W/120) stays in that gap while the
module runs, so the oracle's exact windows and the worker's agree on the wall dashboard."""


@pytest.fixture(scope="module")
def fed_worker(broker: ApacheKafka, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fed]:
    """One worker with opening hours and the business SLA clock, fed three hours of simulated
    traffic, shared by this module's tests, once its /metrics equal the oracle."""
    prefix = PREFIX
    workdir = tmp_path_factory.mktemp("prometheus-worker")
    hours = workdir / "hours.yaml"
    hours.write_text(
        'default: {timezone: Europe/Berlin, hours: {mon-fri: ["09:00-17:00"]}}\n'
        'teams: {billing: {timezone: America/New_York, hours: {mon-sun: ["00:00-24:00"]}}}\n'
    )
    worker = WorkerProcess(
        broker.url,
        workdir,
        "worker",
        CX_TOPIC_PREFIX=prefix,
        CX_BUSINESS_HOURS=str(hours),
        CX_SLA_CLOCK="business",
        CX_ACCOUNT_INTERVAL="1s",
    ).start()
    try:
        wait_for(lambda: _get(worker.url + "/health"), 60, "the worker")  # it creates the topics
        traffic = Traffic(events_per_second=10, seed=5)
        now = time.time()
        traffic.backfill(now - 3 * 3600, now)
        gap = (now - 3600 + GAP[0], now - 3600 + GAP[1])
        subscriptions = subscription_histories(now, accounts=80, seed=5)
        customers = sorted({event["account_id"] for event in subscriptions})
        records, events = [], []
        for topic, key, value in [*traffic.due(now), *failed_long_ago(customers, now)]:
            fields = orjson.loads(value)
            if topic in ("ticket-opened", "survey-answered") and "account_id" not in fields:
                owner = fields.get("ticket_id", fields["event_id"])
                fields["account_id"] = customers[zlib.crc32(owner.encode()) % len(customers)]
            if not gap[0] <= seconds(fields["occurred_at"]) <= gap[1]:
                records.append((prefix + topic, key, orjson.dumps(fields)))
                events.append((topic, fields))
        records += [(prefix + "ticket-opened", b"bad", b"not json")] * 3  # for dead letters
        resent = random.Random(5).sample(subscriptions, len(subscriptions) // 10)
        records += subscription_records(subscriptions + resent)
        produce(broker.bootstrap, records)
        fed = Fed(worker, events, berlin_and_new_york(now), now, subscriptions, len(resent))
        wait_for(lambda: processed(worker) == len(records), 120, "the traffic to be processed")
        processed_by = time.time()
        # the oracle's numbers, and nothing left to read (the lag is on the dashboard)
        failure: list[str | None] = [None]

        def exact() -> bool:
            samples = worker.samples()
            lag = sum(v for (name, _), v in samples.items() if name == "cx_consumer_lag")
            failure[0] = f"lag {lag}" if lag else mismatch(samples, fed.expected())
            if failure[0] is None:  # the account numbers of an instant after it all was read
                got = worker_account_series(samples)
                as_of = got.get(("cx_account_metrics_as_of_seconds", frozenset()), 0.0)
                failure[0] = (
                    f"account numbers as of {as_of}, before {processed_by}"
                    if as_of <= processed_by
                    else account_mismatch(got, fed.accounts(as_of))
                )
            return failure[0] is None

        try:
            wait_for(exact, 60, "the oracle's numbers on /metrics")
        except AssertionError as error:
            raise AssertionError(f"{error}\nlast mismatch: {failure[0]}") from None
        yield fed
    except BaseException:
        print(f"--- {worker.log_path.name} ---\n{worker.log_tail()}")
        raise
    finally:
        worker.stop()


def failed_long_ago(customers: list[str], now: float) -> Iterator[tuple[str, bytes, bytes]]:
    """Tickets support failed (answered three days late, rated 1 out of 5) before the start of
    each account window, for a third of the accounts: the cohorts then have exposed accounts.
    Billing's, open round the clock: business time is calendar time whatever the date."""
    for number, account in enumerate(customers[::3]):
        for days in (40, 120, 380):
            ticket = f"OLD-{number}-{days}"
            opened = now - days * DAY
            for topic, at, fields in (
                ("ticket-opened", opened, {"team": "billing", "account_id": account}),
                ("ticket-replied", opened + 3 * DAY, {"author": "agent"}),
                ("ticket-resolved", opened + 4 * DAY, {}),
                (
                    "survey-answered",
                    opened + 5 * DAY,
                    {"survey": "csat", "score": 1, "team": "billing", "account_id": account},
                ),
            ):
                event = {
                    "event_id": f"{ticket}-{topic}",
                    "ticket_id": ticket,
                    "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)),
                    **fields,
                }
                yield topic, ticket.encode(), orjson.dumps(event)


def berlin_and_new_york(now: float) -> OpeningHours:
    """The fixture's opening hours for the oracle, at the UTC offsets of `now` (the traffic is
    three hours long: a daylight-saving change in it falls on a Sunday night, closed in Berlin,
    and New York is open round the clock)."""
    berlin = datetime.fromtimestamp(now, ZoneInfo("Europe/Berlin")).utcoffset()
    new_york = datetime.fromtimestamp(now, ZoneInfo("America/New_York")).utcoffset()
    assert berlin is not None and new_york is not None
    return OpeningHours(
        default=(berlin.total_seconds() / 3600, {day: [(540, 1020)] for day in range(5)}, set()),
        teams={
            "billing": (
                new_york.total_seconds() / 3600,
                {day: [(0, 1440)] for day in range(7)},
                set(),
            )
        },
    )


@pytest.fixture(scope="module")
def prometheus(
    fed_worker: Fed, broker: ApacheKafka, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Prometheus scraping the worker and, through a blackbox exporter, probing the broker (up)
    and a port nobody listens on (down), with the shipped external labels and rules."""
    tmp_path = tmp_path_factory.mktemp("prometheus")
    shipped = yaml.safe_load((ROOT / "prometheus/prometheus.yml").read_text())
    kafka = next(job for job in shipped["scrape_configs"] if job["job_name"] == "kafka")
    with serving(
        "prometheus-blackbox-exporter",
        f"--config.file={ROOT / 'prometheus/blackbox.yml'}",
        log=tmp_path / "blackbox.log",
    ) as blackbox:
        kafka["static_configs"] = [{"targets": [broker.bootstrap, f"127.0.0.1:{free_port()}"]}]
        kafka["relabel_configs"][-1]["replacement"] = blackbox.split("://")[1]
        config = {
            "global": {
                "scrape_interval": "1s",
                "evaluation_interval": "1s",
                "external_labels": shipped["global"]["external_labels"],
            },
            "rule_files": [str(ROOT / "prometheus/rules/cx-stream.yml")],
            "scrape_configs": [
                {
                    "job_name": "cx-stream",
                    "static_configs": [{"targets": [f"127.0.0.1:{fed_worker.worker.port}"]}],
                },
                kafka,
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        with serving(
            "prometheus",
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            log=tmp_path / "prometheus.log",
        ) as base:
            # three scrapes of every target (rate() needs two), then every rule group
            # evaluated on them
            wait_for(
                lambda: len(query(base, "count_over_time(up[1m]) >= 3")) == 3,
                60,
                "Prometheus to scrape the worker and both probes three times",
            )
            scraped = time.time()
            wait_for(
                lambda: all(
                    datetime.fromisoformat(group["lastEvaluation"]).timestamp() > scraped
                    for group in get_json(f"{base}/api/v1/rules")["data"]["groups"]
                ),
                30,
                "every rule group evaluated",
                interval=0.2,
            )
            yield base


Vector = dict[frozenset[tuple[str, str]], Any]
"""An instant vector by label set; a value is a number, or for a quantile the sorted values
whose order statistic it must be (tests.oracle.assert_matches)."""
SEGMENT_SERIES = re.compile(r"max without \(instance\) \((cx_\w+)\{([^}]*)\}\)")
MATCHER = re.compile(r'(\w+)\s*(!?=)\s*"([^"]*)"')


def oracle_vector(want: Expected, name: str, matchers: str) -> Vector:
    """What `max without (instance) (name{matchers})` selects of the oracle's series."""
    conditions = MATCHER.findall(matchers)
    quantile = next((value for label, _, value in conditions if label == "quantile"), None)
    metric = name.removeprefix("cx_") + ("" if quantile is None else QUANTILE_SUFFIX[quantile])
    candidates: list[tuple[dict[str, str], Any]]
    if metric == "tickets_open":
        candidates = [
            ({"team": team, "channel": channel, "priority": priority}, count)
            for (team, channel, priority), count in want.tickets_open.items()
        ]
    else:
        candidates = [
            (dict(zip(LABELS, labels, strict=True)), values.get(metric))
            for labels, values in want.series.items()
        ]
        assert all(metric in values for values in want.series.values()), f"no {metric}"
    vector = {}
    for labels, value in candidates:
        labels = {**labels, "job": "cx-stream"}  # max without (instance) keeps the job
        if quantile is not None:
            labels["quantile"] = quantile
        if value is not None and all(
            (labels.get(label, "") == wanted) == (op == "=") for label, op, wanted in conditions
        ):
            vector[frozenset(labels.items())] = value
    return vector


def oracle_result(want: Expected, expression: str) -> tuple[Vector, str | None]:
    """The oracle's answer to a dashboard expression on the per-segment series, and the order
    its samples come in ("asc", "desc" or None); KeyError for another kind of expression."""
    whole = SEGMENT_SERIES.fullmatch(expression)
    if whole:
        return oracle_vector(want, *whole.groups()), None
    parts = re.fullmatch(
        f"({SEGMENT_SERIES.pattern}) ([+-]) ({SEGMENT_SERIES.pattern})", expression
    )
    if parts:
        left = oracle_vector(want, parts[2], parts[3])
        right = oracle_vector(want, parts[6], parts[7])
        sign = 1 if parts[4] == "+" else -1
        return {
            labels: left[labels] + sign * right[labels] for labels in left.keys() & right.keys()
        }, None
    ranked = re.fullmatch(r"(sort|sort_desc)\((bottomk|topk)\((\d+), (.*)\)\)", expression)
    if ranked:
        inner = SEGMENT_SERIES.fullmatch(ranked[4])
        assert inner, expression
        vector = oracle_vector(want, *inner.groups())
        # every series is ranked (a quantile known within 2% cannot say which k are lowest)
        assert len(vector) <= int(ranked[3]), expression
        return vector, "asc" if ranked[1] == "sort" else "desc"
    raise KeyError(expression)


def process_result(fed: Fed, base: str, expression: str) -> Vector:
    """What the expressions on the processing itself must answer: the traffic was all
    processed before Prometheus started, so the counters stand still and nothing lags."""
    instance = {("instance", f"127.0.0.1:{fed.worker.port}")}
    job = {("job", "cx-stream")}
    if expression == "outcome:cx_events:rate5m":  # every outcome is exported, 0 until seen
        name = {("__name__", expression)}
        return {frozenset(name | job | {("outcome", o)}): 0.0 for o in OUTCOMES}
    if expression.startswith('sum by (topic) (rate(cx_events_total{outcome="invalid"}'):
        return {frozenset({("topic", PREFIX + topic)}): 0.0 for topic in INPUT_TOPICS}
    if expression == "instance:cx_consumer_lag:sum":
        return {frozenset({("__name__", expression)} | instance | job): 0.0}
    if expression == "job:cx_consumer_lag:sum":
        return {frozenset({("__name__", expression)} | job): 0.0}
    if expression == 'up{job="cx-stream"}':
        return {frozenset({("__name__", "up")} | instance | job): 1.0}
    if expression.startswith("count(ALERTS{"):
        firing = [
            alert
            for alert in get_json(f"{base}/api/v1/alerts")["data"]["alerts"]
            if alert["state"] == "firing"
            and alert["labels"]["alertname"] != "CxWatchdog"
            and alert["labels"].get("audience") != "cs-lead"
        ]
        return {frozenset(): float(len(firing))}
    raise KeyError(expression)


def difference(got: list[Any], wanted: Vector, order: str | None) -> str | None:
    """What differs between a query's samples and the expected vector (None: nothing)."""
    actual = {frozenset(sample["metric"].items()): float(sample["value"][1]) for sample in got}
    if set(actual) != set(wanted):
        return f"series {sorted(map(sorted, actual))}, expected {sorted(map(sorted, wanted))}"
    for labels, value in actual.items():
        want = wanted[labels]
        name = QUANTILE_SUFFIX[dict(labels)["quantile"]] if isinstance(want, list) else "value"
        try:
            assert_matches({name: value}, {name: want}, str(sorted(labels)))
        except AssertionError as error:
            return str(error)
    values = [float(sample["value"][1]) for sample in got]
    if order is not None and values != sorted(values, reverse=order == "desc"):
        return f"not sorted ({order}): {values}"
    return None


def test_every_dashboard_expression_shows_the_oracles_values_for_every_segment(
    prometheus: str, fed_worker: Fed
) -> None:
    """Every panel's expressions, for the whole organisation and every team, channel and
    priority the segment choice offers: exactly the series and values the oracle computes
    from the traffic sent (absent where a ratio, average or quantile has no count), and the
    processing panels what a worker that has read everything shows."""
    want = fed_worker.expected()
    options = segment_options(prometheus)
    assert options["all"] == 'channel="all",priority="all",team="all"'
    offered = {
        f"{dimension} {labels[position]}"
        for labels in want.tickets_open
        for position, dimension in enumerate(("team", "channel", "priority"))
        if labels[position] != "all"
    }
    assert set(options) == {"all"} | offered

    wrong = []
    for text, segment in options.items():
        for where, expression in dashboard_expressions(segment):
            if text != "all" and segment not in expression:
                continue  # the wall's expressions name no segment: checked once
            try:
                wanted, order = oracle_result(want, expression)
                problem = difference(query(prometheus, expression), wanted, order)
            except KeyError:  # on the processing: a few tries, as alerts fire in between
                for _ in range(10):
                    wanted = process_result(fed_worker, prometheus, expression)
                    problem = difference(query(prometheus, expression), wanted, None)
                    if not problem:
                        break
                    time.sleep(0.5)
            if problem:
                wrong.append(f"{text}: {where}: {expression}: {problem}")
    assert time.time() < fed_worker.made + GAP[1] - 60, "ran past the gap: the 1h edge moved"
    assert not wrong, f"{len(wrong)} differ, e.g.\n" + "\n".join(wrong[:10])


ACCOUNT_GAUGE = re.compile(r"max (by|without) \(([^)]*)\) \((cx_\w+)(?:\{([^}]*)\})?\)")


def oracle_accounts(want: AccountSeries, expression: str, at: float) -> Vector:
    """The oracle's answer to a customer-success expression on its section-7 series, evaluated
    at `at`: a `max by` or `max without` of one metric, negated, its age (`time() - ...`), or
    one such over another; KeyError for another kind of expression."""
    if " / " in expression:
        over, under = (oracle_accounts(want, part, at) for part in expression.split(" / "))
        return {
            labels: value / under[labels]
            for labels, value in over.items()
            if under.get(labels)  # (Prometheus divides by 0 into NaN or Inf: none here)
        }
    negated = expression.startswith("-")
    age = re.fullmatch(r"time\(\) - (.*)", expression)
    whole = ACCOUNT_GAUGE.fullmatch(age.group(1) if age else expression.removeprefix("-"))
    if not whole:
        raise KeyError(expression)
    how, grouping, name, matchers = whole.groups()
    listed = {label.strip() for label in grouping.split(",")}
    conditions = MATCHER.findall(matchers or "")
    assert all(op == "=" for _, op, _ in conditions), expression
    vector: Vector = {}
    for (metric, labels), value in want.items():
        if metric == name and all((label, v) in labels for label, _, v in conditions):
            value = at - value if age else -value if negated else value
            kept = (
                frozenset(pair for pair in labels if pair[0] in listed)
                if how == "by"
                else frozenset(
                    pair for pair in labels | {("job", "cx-stream")} if pair[0] not in listed
                )
            )
            vector[kept] = max(value, vector.get(kept, value))
    return vector


AS_OF = "max without (instance) (cx_account_metrics_as_of_seconds)"


def test_the_customer_success_dashboard_shows_the_oracles_numbers(
    prometheus: str, fed_worker: Fed
) -> None:
    """Every expression of the customer-success dashboard (revenue and retention, 7.3; churn by
    driver and health band, 7.4), for every account window: the oracle's numbers at the
    instant the worker states, all read through Prometheus at one moment."""
    for _ in range(5):
        # every scrape up to `at` is stored by now (its timeout is the 1 s interval), unless a
        # starved Prometheus stores one late: then the instant is read again
        at = round(time.time() - 3, 3)
        (stamp,) = query(prometheus, AS_OF, at)
        wrong = account_mismatches(prometheus, fed_worker, at, float(stamp["value"][1]))
        if query(prometheus, AS_OF, at) == [stamp]:
            break
    else:
        raise AssertionError("Prometheus kept storing scrapes late: no instant read whole")
    assert not wrong, f"{len(wrong)} differ, e.g.\n" + "\n".join(wrong[:10])


def account_mismatches(prometheus: str, fed_worker: Fed, at: float, as_of: float) -> list[str]:
    """The customer-success expressions whose values at `at` differ from the oracle's at
    `as_of`."""
    assert at - 30 < as_of <= at, "the account numbers are not live"
    want = fed_worker.accounts(as_of)
    # the traffic makes every number worth checking: a cohort, movements and ratios in every
    # window, every kind of movement in the longest
    for window in ACCOUNT_WINDOWS:
        labelled = {name for name, labels in want if ("window", window) in labels}
        assert "cx_net_revenue_retention_ratio" in labelled, window
        assert "cx_customer_lifetime_value" in labelled, window
    assert all(
        want[("cx_mrr_movements", frozenset({("window", "365d"), ("movement", kind)}))] > 0
        for kind in ("new", "reactivation", "expansion", "contraction", "churn")
    )
    # and some accounts of every cohort were exposed to every driver the old tickets set
    for window in ACCOUNT_WINDOWS:
        for driver in ("sla_breached", "csat_unsatisfied"):
            exposed = {("window", window), ("driver", driver), ("exposed", "true")}
            assert want[("cx_cohort_accounts_by_driver", frozenset(exposed))] > 0, window
    wrong = []
    for where, expression in success_expressions():
        got = query(prometheus, expression, at)  # every expression evaluates
        names = {name for name, _ in SELECTOR.findall(expression)}
        assert names <= set(ACCOUNT_METRICS), (where, names)
        wanted = oracle_accounts(want, expression, at)
        assert wanted, f"{where}: {expression} selects none of the oracle's series"
        problem = difference(got, wanted, None)
        if problem:
            wrong.append(f"{where}: {expression}: {problem}")
    return wrong


def test_the_mrr_bridge_adds_up(fed_worker: Fed) -> None:
    """The bridge's claim, on the oracle: MRR at the window's start (the cohort's MRR, as every
    account paying then is in the cohort) plus the movements in it is MRR now."""
    as_of = time.time()
    want = fed_worker.accounts(as_of)
    mrr = want[("cx_mrr", frozenset())]
    for window in ACCOUNT_WINDOWS:
        labels = frozenset({("window", window)})

        def moved(kind: str, labels: frozenset[tuple[str, str]] = labels) -> float:
            return want[("cx_mrr_movements", labels | {("movement", kind)})]

        start = want[("cx_cohort_mrr", labels)]
        gained = moved("new") + moved("reactivation") + moved("expansion")
        assert math.isclose(start + gained - moved("contraction") - moved("churn"), mrr), window


def test_every_record_is_counted_once_by_outcome(fed_worker: Fed) -> None:
    counted: Counter[str] = Counter()
    for (_, outcome), count in events_total(fed_worker.worker).items():
        counted[outcome] += int(count)
    want = Counter(outcomes(fed_worker.events))
    want.update(
        {"invalid": 3, "accepted": len(fed_worker.subscriptions), "duplicate": fed_worker.resent}
    )
    assert counted == want


def test_every_rule_evaluates_on_exported_metrics_and_labels(prometheus: str) -> None:
    """Every metric a rule reads has data, with every label it matches or groups by."""
    exported_labels: dict[str, set[str]] = {}
    for rule in rules():
        expression = rule["expr"]
        query(prometheus, expression)  # evaluates without error
        for name, matchers in SELECTOR.findall(expression):
            series = query(prometheus, name + matchers)
            assert series, (
                f"{rule.get('alert') or rule.get('record')}: {name}{matchers} has no data"
            )
            exported_labels.setdefault(name, set()).update(*(s["metric"] for s in series))
        labels = set().union(
            *(exported_labels.get(name, set()) for name, _ in SELECTOR.findall(expression))
        )
        for clause in GROUPING.findall(expression):
            for label in filter(None, (part.strip() for part in clause.split(","))):
                assert label in labels | TARGET_LABELS, (
                    f"{expression!r} groups by unknown label {label}"
                )
        if "record" in rule:
            assert query(prometheus, rule["record"]), f"recording rule {rule['record']} has no data"


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body: bytes = response.read()
            return body
    except OSError:
        return None


def test_kafka_probe_tells_up_from_down(prometheus: str) -> None:
    probes = {
        sample["metric"]["instance"]: sample["value"][1]
        for sample in query(prometheus, 'probe_success{job="kafka"}')
    }
    assert sorted(probes.values()) == ["0", "1"], probes
    down = next(instance for instance, value in probes.items() if value == "0")
    rule = next(r for r in rules() if r.get("alert") == "CxKafkaDown")
    assert [s["metric"]["instance"] for s in query(prometheus, rule["expr"])] == [down]


def test_alerts_carry_absolute_runbook_urls(prometheus: str) -> None:
    base = yaml.safe_load((ROOT / "prometheus/prometheus.yml").read_text())["global"][
        "external_labels"
    ]["runbook_base"]
    alerts = wait_for(
        lambda: get_json(f"{prometheus}/api/v1/alerts")["data"]["alerts"], 30, "the watchdog"
    )
    watchdog = next(a for a in alerts if a["labels"]["alertname"] == "CxWatchdog")
    assert watchdog["annotations"]["runbook_url"] == base + "#cxwatchdog"
