"""Account evaluation: what a worker does at every CX_ACCOUNT_INTERVAL instant (docs/contract.md
7.5), for 10,000 and 100,000 accounts of one partition, with and without support experience.

Measured in process, on the worker's own code: the accounts are built as the worker keeps them
(AccountState, stored, put into the core's AccountBook), then one instant is evaluated as the
worker's timer does it (the core's evaluation of the partition's accounts into the totals,
`health_values` for each subscribed account, and the cx-account-health changes against what
was published at the previous instant, where nothing changed), in one step where the worker
takes 5,000 accounts a step. No broker: the cost is the CPU of one evaluation, which the
worker spreads over the interval in steps and which keeps the ingest waiting only between
steps. The baseline in the same run is the same accounts without experience (revenue only,
issue 21's figure).
"""

from __future__ import annotations

import random
import time

import orjson

from stream._core import AccountBook, AccountRules
from stream.account_health import HealthPublisher, health_values
from stream.accounts import AccountState, SubscriptionEvent, apply_subscription_event, evaluation
from stream.experience import AccountObservation, parse_weights

from .context import Suite
from .figures import BenchResult, Figure, Target, ratio
from .progress import say

SIZES = (10_000, 100_000)
DAY = 86400.0
WINDOWS = (30 * DAY, 90 * DAY, 365 * DAY)
EITHER = "either (in process)"
"""An evaluation does the same under either processing guarantee."""
INTERVAL = 60.0
"""CX_ACCOUNT_INTERVAL's default: the time one evaluation must fit in, with room."""


def accounts(count: int, seed: int, now: float, experience: bool) -> AccountBook:
    """`count` accounts of one partition: one to three subscriptions with a few changes over
    400 days, and (with `experience`) a dozen tickets' and responses' observations over the
    455 days an evaluation reaches back."""
    rng = random.Random(seed)
    book = AccountBook()
    for number in range(count):
        account_id = f"ACC-{number:06d}"
        state = AccountState(0)
        for sub in range(rng.randint(1, 3)):
            at = now - rng.uniform(1, 400) * DAY
            for change in range(rng.randint(1, 4)):
                amount = rng.choice([0, 29_000_000, 99_000_000, 249_500_000])
                event = SubscriptionEvent(at, f"{account_id}-{sub}-{change}", str(sub), amount)
                state = apply_subscription_event(state, event)
                at = min(at + rng.choice([1, 30, 90]) * DAY, now)
        if experience:
            sources = {}
            for ticket in range(12):
                at = now - rng.uniform(0, 455) * DAY
                observations: tuple[AccountObservation, ...] = (
                    ("frt", at, int(rng.random() < 0.2)),
                    ("ttr", at + 3600, int(rng.random() < 0.2)),
                    ("resolved", at + 3600, at + 7200 if rng.random() < 0.1 else None),
                    ("csat", at + 7200, rng.randint(1, 5)),
                )
                sources[f"ticket:{account_id}-{ticket}"] = (4, observations)
            state = state._replace(experience=sources)
        book.put(0, account_id, orjson.dumps(state.to_json()))
    return book


def one_instant(book: AccountBook, as_of: float, health: HealthPublisher) -> float:
    """Seconds of CPU for one evaluation instant of the book's accounts, as the worker's timer
    does it."""
    rules = AccountRules(list(WINDOWS), 90 * DAY, parse_weights(""))
    started = time.process_time()
    _, healths = evaluation(book.accounts(0), as_of, rules)
    records = [health_values(record) for record in healths]
    _, digests = health.changes(0, records, as_of)
    health.sent(0, digests)
    return time.process_time() - started


def run_accounts(suite: Suite) -> BenchResult:
    result = BenchResult("accounts")
    now = time.time()
    for size in SIZES:
        timed: dict[bool, list[float]] = {True: [], False: []}
        books = {kind: accounts(size, suite.seed, now, kind) for kind in (True, False)}
        for run in range(suite.runs):
            for experience in (run % 2 == 0, run % 2 == 1):  # alternated, as elsewhere
                health = HealthPublisher()
                one_instant(books[experience], now, health)  # the first publishes everything
                timed[experience].append(one_instant(books[experience], now + INTERVAL, health))
            say(
                f"accounts {size:,}: {timed[True][-1]:.2f} s with experience,"
                f" {timed[False][-1]:.2f} s revenue only"
            )
        name = f"{size:,} accounts"
        result.figures += [
            Figure(
                f"accounts.evaluation_{size}",
                f"account evaluation at one instant, {name} with experience (CPU)",
                "s",
                timed[True],
                Target("at most a quarter of the 60 s interval", INTERVAL / 4, at_most=True)
                if size == max(SIZES)
                else None,
                guarantee=EITHER,
            ),
            Figure(
                f"accounts.evaluation_{size}_revenue_only",
                f"account evaluation at one instant, {name}, revenue only (CPU)",
                "s",
                timed[False],
                guarantee=EITHER,
            ),
            ratio(
                f"accounts.experience_cost_{size}",
                f"account evaluation, {name}: with experience / revenue only (same run)",
                timed[True],
                timed[False],
                guarantee=EITHER,
            ),
        ]
    return result
