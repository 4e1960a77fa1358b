"""Revenue and retention (docs/contract.md 7.3, 7.5): evaluated per partition at instants on one
grid, merged over every partition at the same instant, exported on /metrics and cx-metrics.

Each input partition's worker evaluates its accounts at every multiple of CX_ACCOUNT_INTERVAL
(`as_of`) and sends their totals to cx-partials under the key `accounts`, so one worker merges
them (the owner of that cx-partials partition). It publishes the latest instant for which it
has the totals of every partition, never a mix of two instants; an instant some partition has
not reported yet (its worker is restarting, say) waits, and the one before stays published.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._core import BANDS, DRIVERS
from .accounts import COUNTED_MOVEMENTS, FIELDS, MOVEMENTS, Totals, band_slot, driver_slot
from .events import MILLIONTHS
from .exporter import rfc3339
from .stats import newcombe_interval, ratio, wilson_interval
from .windows import WindowSpec

PARTIAL_KEY = b"accounts"
"""The cx-partials key (and so partition) of every partition's account totals."""

INSTANTS_KEPT = 4
"""Instants kept per source partition on the merging side, so that an instant one partition
reports late can still be completed."""

MONTH_SECONDS = 30 * 86400
"""The month of the monthly churn rate in the lifetime value (7.3: 30d / W)."""

Values = dict[str, Any]
"""A snapshot's numbers by name (labelled ones nested by label); None where absent."""


def as_of_instant(now: float, interval: float) -> float:
    """The latest evaluation instant at or before `now`: a multiple of `interval` seconds."""
    return (now // interval) * interval


def partial_message(partition: int, partitions: int, as_of: float, totals: Totals) -> bytes:
    import orjson

    return orjson.dumps(
        {
            "accounts": {
                "source_partition": partition,
                "partitions": partitions,
                "as_of": as_of,
                "totals": totals.to_json(),
            }
        }
    )


def _amount(millionths: int) -> float:
    return millionths / MILLIONTHS


def revenue_values(
    totals: Totals, windows: Sequence[WindowSpec], gross_margin: float
) -> dict[str, Values]:
    """Every number of 7.3 for each account window, from totals over all accounts: amounts in
    currency units, ratios absent (None) while their denominator is 0."""
    arpa = ratio(totals.mrr, totals.paying)
    common: Values = {
        "mrr": _amount(totals.mrr),
        "accounts_paying": totals.paying,
        "arpa": None if arpa is None else arpa / MILLIONTHS,
    }
    common["accounts_by_health"] = {band: totals.health[band_slot(band)] for band in BANDS}
    common["mrr_by_health"] = {band: _amount(totals.health[band_slot(band) + 1]) for band in BANDS}
    by_window = {}
    for spec, fields, drivers, bands in zip(
        windows, totals.windows, totals.drivers, totals.bands, strict=True
    ):
        field = dict(zip(FIELDS, fields, strict=True))
        cohort, cohort_mrr = field["cohort_accounts"], field["cohort_mrr"]
        retention = ratio(field["retained_accounts"], cohort)
        churn = None if retention is None else 1 - retention
        by_window[spec.name] = {
            **common,
            "mrr_movements": {kind: _amount(field[f"{kind}_mrr"]) for kind in MOVEMENTS},
            "account_movements": {kind: field[f"{kind}_accounts"] for kind in COUNTED_MOVEMENTS},
            "cohort_accounts": cohort,
            "cohort_mrr": _amount(cohort_mrr),
            "account_churn_ratio": churn,
            "customer_retention_ratio": retention,
            "gross_revenue_retention_ratio": ratio(field["grr_mrr"], cohort_mrr),
            "net_revenue_retention_ratio": ratio(field["retained_mrr"], cohort_mrr),
            "customer_lifetime_value": lifetime_value(arpa, churn, spec.seconds, gross_margin),
            **churn_by_driver(drivers),
            **churn_by_health(bands),
        }
    return by_window


def churn_by_driver(drivers: Sequence[int]) -> Values:
    """Per driver (7.4): each group's cohort and churn with its Wilson interval, and the
    difference exposed minus not exposed with Newcombe's interval."""
    values: Values = {
        name: {driver: {} for driver in DRIVERS}
        for name in (
            "cohort_accounts_by_driver",
            "account_churn_ratio_by_driver",
            "account_churn_ratio_by_driver_lower",
            "account_churn_ratio_by_driver_upper",
        )
    }
    for name in ("", "_lower", "_upper"):
        values[f"account_churn_ratio_difference{name}"] = {}
    for index, driver in enumerate(DRIVERS):
        groups = {}
        for exposed in (True, False):
            slot = driver_slot(index, exposed)
            cohort, churned = drivers[slot], drivers[slot + 1]
            groups[exposed] = churned, cohort
            label = "true" if exposed else "false"
            values["cohort_accounts_by_driver"][driver][label] = cohort
            for name, value in _churn("account_churn_ratio_by_driver", churned, cohort).items():
                values[name][driver][label] = value
        difference = newcombe_interval(*groups[True], *groups[False])
        for name, value in zip(("", "_lower", "_upper"), difference or (None,) * 3, strict=True):
            values[f"account_churn_ratio_difference{name}"][driver] = value
    return values


def churn_by_health(bands: Sequence[int]) -> Values:
    """Per health band at s (7.4): the cohort and its churn with its Wilson interval."""
    values: Values = {
        name: {}
        for name in (
            "cohort_accounts_by_health",
            "account_churn_ratio_by_health",
            "account_churn_ratio_by_health_lower",
            "account_churn_ratio_by_health_upper",
        )
    }
    for band in BANDS:
        cohort, churned = bands[band_slot(band)], bands[band_slot(band) + 1]
        values["cohort_accounts_by_health"][band] = cohort
        for name, value in _churn("account_churn_ratio_by_health", churned, cohort).items():
            values[name][band] = value
    return values


def _churn(name: str, churned: int, cohort: int) -> dict[str, float | None]:
    """A group's churn ratio under `name` and its Wilson interval under name_lower and
    name_upper; None while the group is empty."""
    interval = wilson_interval(churned, cohort)
    low, high = (None, None) if interval is None else interval
    return {name: ratio(churned, cohort), f"{name}_lower": low, f"{name}_upper": high}


def lifetime_value(
    arpa_millionths: float | None, churn: float | None, window_seconds: float, gross_margin: float
) -> float | None:
    """CLV = ARPA x gross margin / c, c the monthly logo churn the window's churn implies:
    c = 1 - (1 - churn)^(30d / W). Absent when c = 0 (or unknown)."""
    if arpa_millionths is None or churn is None:
        return None
    monthly: float = 1 - (1 - churn) ** (MONTH_SECONDS / window_seconds)
    if monthly <= 0:
        return None
    return arpa_millionths / MILLIONTHS * gross_margin / monthly


@dataclass(slots=True)
class Published:
    """What the merging worker publishes: one instant's numbers per account window."""

    as_of: float
    windows: dict[str, Values]


class Revenue:
    """The merging side: the latest account totals of every source partition, merged at the
    latest instant all of them reported."""

    def __init__(
        self,
        windows: Sequence[WindowSpec],
        gross_margin: float,
        owned_partitions: Callable[[], set[int]],
    ) -> None:
        self.windows = tuple(windows)
        self.gross_margin = gross_margin
        self.owned_partitions = owned_partitions
        """The cx-partials partitions this worker owns (it exports what arrives on them)."""
        self.via: int | None = None
        """The cx-partials partition the totals arrive on."""
        self.partitions = 0
        """How many input partitions there are (as the last totals said)."""
        self.instants: dict[int, dict[float, dict[str, Any]]] = {}
        """Per source partition: its totals at its latest few instants."""
        self._published: Published | None = None

    def apply(self, partial: Mapping[str, Any], via: int) -> None:
        """Keep one partition's totals at one instant, received on cx-partials partition
        `via`."""
        self.via = via
        self.partitions = partial["partitions"]
        kept = self.instants.setdefault(partial["source_partition"], {})
        kept[partial["as_of"]] = partial["totals"]
        for old in sorted(kept)[:-INSTANTS_KEPT]:
            del kept[old]

    def latest(self) -> Published | None:
        """The numbers at the latest instant every input partition reported, if this worker
        exports them (it owns the cx-partials partition they arrive on)."""
        if self.via is None or self.via not in self.owned_partitions():
            return None
        sources = [self.instants.get(partition, {}) for partition in range(self.partitions)]
        common = set.intersection(*(set(kept) for kept in sources)) if sources else set()
        if not common:
            return self._published
        as_of = max(common)
        if self._published is None or self._published.as_of != as_of:
            total = Totals(len(self.windows))
            for kept in sources:
                total.add(Totals.from_json(kept[as_of]))
            values = revenue_values(total, self.windows, self.gross_margin)
            self._published = Published(as_of, values)
        return self._published


def account_snapshots(published: Published) -> Iterable[tuple[str, dict[str, Any]]]:
    """cx-metrics: one snapshot per account window, key `accounts,window=30d`."""
    for window, values in published.windows.items():
        yield (
            f"accounts,window={window}",
            {"window": window, "as_of": rfc3339(published.as_of), **values},
        )


_HELP = {
    "cx_account_metrics_as_of_seconds": "Unix time of the instant the account numbers are at",
    "cx_mrr": "Monthly recurring revenue of all accounts, in the reporting currency",
    "cx_accounts_paying": "Accounts whose monthly recurring revenue is above 0",
    "cx_arpa": "Average revenue per paying account (MRR / paying accounts)",
    "cx_mrr_movements": "MRR moved in the window, by kind: new, reactivation, expansion, ...",
    "cx_account_movements": "Accounts that were new, reactivated or churned in the window",
    "cx_cohort_accounts": "Accounts paying at the window's start (the cohort)",
    "cx_cohort_mrr": "The cohort's MRR at the window's start",
    "cx_account_churn_ratio": "Share of the cohort not paying now (logo churn)",
    "cx_customer_retention_ratio": "Share of the cohort still paying now",
    "cx_gross_revenue_retention_ratio": "GRR: the cohort's MRR kept, expansion left out",
    "cx_net_revenue_retention_ratio": "NRR: the cohort's MRR now over its MRR at the start",
    "cx_customer_lifetime_value": "CLV: ARPA x gross margin / the monthly logo churn",
    "cx_accounts_by_health": "Paying accounts by health band now",
    "cx_mrr_by_health": "MRR of the paying accounts by health band now",
    "cx_cohort_accounts_by_driver": "The cohort split by whether a driver was true at the start",
    "cx_account_churn_ratio_by_driver": "Logo churn of the cohort's accounts exposed or not",
    "cx_account_churn_ratio_by_driver_lower": "Wilson 95% lower bound of that churn",
    "cx_account_churn_ratio_by_driver_upper": "Wilson 95% upper bound of that churn",
    "cx_account_churn_ratio_difference": "Churn of the exposed minus churn of the others",
    "cx_account_churn_ratio_difference_lower": "Newcombe 95% lower bound of the difference",
    "cx_account_churn_ratio_difference_upper": "Newcombe 95% upper bound of the difference",
    "cx_cohort_accounts_by_health": "The cohort split by health band at the start",
    "cx_account_churn_ratio_by_health": "Logo churn of the cohort's accounts in each band",
    "cx_account_churn_ratio_by_health_lower": "Wilson 95% lower bound of that churn",
    "cx_account_churn_ratio_by_health_upper": "Wilson 95% upper bound of that churn",
}
"""Each account family's HELP sentence."""

_LABELS = {
    "mrr_movements": ("movement",),
    "account_movements": ("movement",),
    "accounts_by_health": ("band",),
    "mrr_by_health": ("band",),
    **{
        f"{name}{bound}": ("driver", "exposed")
        for name in ("cohort_accounts_by_driver", "account_churn_ratio_by_driver")
        for bound in ("", "_lower", "_upper")
    },
    **{f"account_churn_ratio_difference{bound}": ("driver",) for bound in ("", "_lower", "_upper")},
    **{
        f"{name}{bound}": ("band",)
        for name in ("cohort_accounts_by_health", "account_churn_ratio_by_health")
        for bound in ("", "_lower", "_upper")
    },
}
"""The labels of each labelled account family, outermost first (its values nest so)."""

COMMON = ("mrr", "accounts_paying", "arpa", "accounts_by_health", "mrr_by_health")
"""The numbers at as_of alone, the same in every window's snapshot: exported without `window`."""


def _lines(
    name: str, labels: tuple[tuple[str, str], ...], value: Any, depth: int = 0
) -> Iterable[str]:
    """A value's sample lines: one, or one per label value of a nested value (`depth` levels
    in already); none while absent."""
    if value is None:
        return
    if isinstance(value, dict):
        label = _LABELS[name][depth]
        for key, nested in value.items():
            yield from _lines(name, (*labels, (label, key)), nested, depth + 1)
        return
    text = ",".join(f'{label}="{key}"' for label, key in labels)
    yield f"cx_{name}{{{text}}} {float(value)!r}" if text else f"cx_{name} {float(value)!r}"


def account_samples(published: Published) -> str:
    """The account families in the Prometheus text format (no account label, ever)."""
    families: dict[str, list[str]] = {
        "cx_account_metrics_as_of_seconds": [
            f"cx_account_metrics_as_of_seconds {published.as_of!r}"
        ]
    }
    first = next(iter(published.windows.values()), None)
    for name in COMMON:
        if first is not None:
            families.setdefault(f"cx_{name}", []).extend(_lines(name, (), first[name]))
    for window, values in published.windows.items():
        for name, value in values.items():
            if name not in COMMON:
                lines = _lines(name, (("window", window),), value)
                families.setdefault(f"cx_{name}", []).extend(lines)
    families = {family: lines for family, lines in families.items() if lines}
    return "".join(
        f"# HELP {family} {_HELP[family]}\n# TYPE {family} gauge\n"
        + "".join(f"{line}\n" for line in lines)
        for family, lines in families.items()
    )
