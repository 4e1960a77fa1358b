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

from .accounts import COUNTED_MOVEMENTS, FIELDS, MOVEMENTS, Totals
from .events import MILLIONTHS
from .exporter import rfc3339
from .stats import ratio
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
    by_window = {}
    for spec, fields in zip(windows, totals.windows, strict=True):
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
        }
    return by_window


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
}
"""Each account family's HELP sentence."""

_LABEL_OF = {"mrr_movements": "movement", "account_movements": "movement"}


def account_samples(published: Published) -> str:
    """The account families in the Prometheus text format (no account label, ever)."""
    families: dict[str, list[str]] = {
        "cx_account_metrics_as_of_seconds": [
            f"cx_account_metrics_as_of_seconds {published.as_of!r}"
        ]
    }
    first = next(iter(published.windows.values()), None)
    for name in ("mrr", "accounts_paying", "arpa"):
        value = None if first is None else first[name]
        if value is not None:
            families.setdefault(f"cx_{name}", []).append(f"cx_{name} {float(value)!r}")
    for window, values in published.windows.items():
        labels = f'window="{window}"'
        for name, value in values.items():
            if name in ("mrr", "accounts_paying", "arpa") or value is None:
                continue
            family = families.setdefault(f"cx_{name}", [])
            if isinstance(value, dict):
                label = _LABEL_OF[name]
                family.extend(
                    f'cx_{name}{{{labels},{label}="{key}"}} {float(amount)!r}'
                    for key, amount in value.items()
                )
            else:
                family.append(f"cx_{name}{{{labels}}} {float(value)!r}")
    return "".join(
        f"# HELP {family} {_HELP[family]}\n# TYPE {family} gauge\n"
        + "".join(f"{line}\n" for line in lines)
        for family, lines in families.items()
    )
