"""Each account's support experience (docs/contract.md 7.4): drivers, health factors, score and
band at an instant, from the section-3 observations of its tickets and survey responses. No Kafka.

Tickets and responses are partitioned by ticket, accounts by account. The partition of a ticket
sends, whenever the ticket's account observations change (the core works them out:
`core/src/experience.rs`), all of them to the account's partition (a topic keyed by account, as
Kafka Streams repartitions), tagged with the ticket state's version (how many distinct events it
holds: it only grows). The account keeps, per ticket or response, the set with the greatest
version: a duplicate, any order of arrival and a replay after a crash leave the same
experience, a late event that retracts an observation replaces the set, and a ticket whose
account changed (an earlier opening came) sends an empty set to the account it left.
Forgetting a ticket sends nothing: the account keeps what it had; an event re-sent after that
recreates a ticket of a lower version, which the account ignores.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Literal, NamedTuple

import orjson

from .events import InvalidEvent
from .stats import is_ces_low_effort, is_csat_satisfied, nps_category

EXPERIENCE_TOPIC = "cx-account-experience"
"""The internal topic (before any CX_TOPIC_PREFIX) that carries ticket and survey observations to
their accounts' partitions, keyed by account_id."""

DRIVERS = ("sla_breached", "reopened", "csat_unsatisfied", "nps_detractor", "high_effort")
FACTORS = ("csat", "nps", "ces", "first_response_sla", "resolution_sla", "reopens")
BANDS = ("red", "yellow", "green", "unknown")
Band = Literal["red", "yellow", "green", "unknown"]

AccountObservation = tuple[Any, ...]
"""One observation as the account keeps it, a JSON-friendly tuple, `at` second:
("frt", at, breached), ("ttr", at, breached), ("reopen", at), ("resolved", at, reopened_at or
None: the ticket's first reopen after it), ("csat", at, score), ("nps", at, score, event_id),
("ces", at, score)."""


class ExperienceUpdate(NamedTuple):
    """What a ticket or survey slot sends its account: all its observations, as of `version`."""

    account_id: str
    source: str
    """ticket:<ticket_id> or survey:<slot key>."""
    version: int
    observations: tuple[AccountObservation, ...]


def encode_experience(update: ExperienceUpdate) -> tuple[bytes, bytes]:
    """The record (key, value) of an update on the experience topic."""
    value = {
        "account_id": update.account_id,
        "source": update.source,
        "version": update.version,
        "observations": update.observations,
    }
    return update.account_id.encode(), orjson.dumps(value)


def decode_experience(value: bytes | None) -> ExperienceUpdate:
    """An update read from the experience topic (its account is in the value too, so that a
    record does not depend on its key)."""
    try:
        data = orjson.loads(value or b"")
        return ExperienceUpdate(
            data["account_id"],
            data["source"],
            int(data["version"]),
            tuple(tuple(obs) for obs in data["observations"]),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise InvalidEvent(f"not an account experience record: {type(error).__name__}") from None


Sources = Mapping[str, tuple[int, Sequence[AccountObservation]]]
"""An account's experience as kept: per source, its version and observations."""


def merge_update(
    sources: Sources, update: ExperienceUpdate, horizon: float = float("-inf")
) -> dict[str, Any] | None:
    """The account's sources with `update` applied, or None when it changes nothing (an older
    or the same version of what the account holds). Sources whose observations are all at or
    before `horizon` go: no evaluation reaches back that far (the largest account window plus
    the lookback), so the account's state stays bounded however long it lives. (A source
    without observations stays: it is a ticket that left the account, and its version keeps
    a replayed older one out.)"""
    held = sources.get(update.source)
    if held is not None and held[0] >= update.version:
        return None
    merged = {**sources, update.source: (update.version, update.observations)}
    return {
        source: (version, observations)
        for source, (version, observations) in merged.items()
        if not observations or max(obs[1] for obs in observations) > horizon
    }


class Snapshot(NamedTuple):
    """An account's experience at instant u: its drivers, present factors, score and band."""

    drivers: dict[str, bool]
    factors: dict[str, float]
    score: float | None
    band: Band


NO_EXPERIENCE = Snapshot(dict.fromkeys(DRIVERS, False), {}, None, "unknown")


def snapshot_at(
    observations: Iterable[AccountObservation],
    moment: float,
    lookback: float,
    weights: Mapping[str, float],
) -> Snapshot:
    """The account's experience counted in (moment - lookback, moment]."""
    start = moment - lookback
    frt = frt_breaches = ttr = ttr_breaches = reopens = 0
    resolved = reopened = csat = satisfied = unsatisfied = ces = low_effort = high_effort = 0
    latest_nps: tuple[float, str, int] | None = None
    for observation in observations:
        at = observation[1]
        if not start < at <= moment:
            continue
        kind = observation[0]
        if kind == "frt":
            frt += 1
            frt_breaches += observation[2]
        elif kind == "ttr":
            ttr += 1
            ttr_breaches += observation[2]
        elif kind == "reopen":
            reopens += 1
        elif kind == "resolved":
            resolved += 1
            # reopened by the instant judged: nothing after it is seen
            reopened += observation[2] is not None and observation[2] <= moment
        elif kind == "csat":
            csat += 1
            satisfied += is_csat_satisfied(observation[2])
            unsatisfied += observation[2] <= 3
        elif kind == "ces":
            ces += 1
            low_effort += is_ces_low_effort(observation[2])
            high_effort += observation[2] <= 4
        elif kind == "nps":
            stamp = (at, observation[3], observation[2])
            if latest_nps is None or stamp[:2] > latest_nps[:2]:
                latest_nps = stamp
    nps = None if latest_nps is None else nps_category(latest_nps[2])
    drivers = {
        "sla_breached": frt_breaches + ttr_breaches > 0,
        "reopened": reopens > 0,
        "csat_unsatisfied": unsatisfied > 0,
        "nps_detractor": nps == "detractor",
        "high_effort": high_effort > 0,
    }
    factors: dict[str, float] = {}
    if csat:
        factors["csat"] = 100 * satisfied / csat
    if nps is not None:
        factors["nps"] = {"promoter": 100.0, "passive": 50.0, "detractor": 0.0}[nps]
    if ces:
        factors["ces"] = 100 * low_effort / ces
    if frt:
        factors["first_response_sla"] = 100 * (1 - frt_breaches / frt)
    if ttr:
        factors["resolution_sla"] = 100 * (1 - ttr_breaches / ttr)
    if resolved:
        factors["reopens"] = 100 * (1 - reopened / resolved)
    score = health_score(factors, weights)
    return Snapshot(drivers, factors, score, band(score))


def health_score(factors: Mapping[str, float], weights: Mapping[str, float]) -> float | None:
    """The weighted mean of the present factors (a factor not weighted keeps weight 1, weight 0
    drops it), rounded to 6 decimal places half to even; None without a factor."""
    weighted = [(weights.get(name, 1.0), value) for name, value in factors.items()]
    total = sum(weight for weight, _ in weighted)
    if total == 0:
        return None
    mean = sum(weight * value for weight, value in weighted) / total
    return float(Decimal(repr(mean)).quantize(Decimal("0.000001"), rounding=ROUND_HALF_EVEN))


def band(score: float | None) -> Band:
    if score is None:
        return "unknown"
    if score < 50:
        return "red"
    if score < 75:
        return "yellow"
    return "green"


def parse_weights(text: str) -> dict[str, float]:
    """CX_HEALTH_WEIGHTS, 'csat=2,nps=1': the factors not named keep weight 1."""
    weights = dict.fromkeys(FACTORS, 1.0)
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        name, equals, value = part.partition("=")
        name = name.strip()
        if name not in FACTORS or not equals:
            raise ValueError(f"{part!r} is not factor=weight with a factor of {', '.join(FACTORS)}")
        try:
            weight = float(value)
        except ValueError:
            raise ValueError(f"{part!r}: {value.strip()!r} is not a number") from None
        if not weight >= 0 or weight == float("inf"):
            raise ValueError(f"{part!r}: a weight is a finite number of at least 0")
        weights[name] = weight
    return weights
