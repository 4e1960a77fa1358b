"""What the demo shows of a worker's /metrics: a live view in a terminal, plain status lines
elsewhere (a pipe, a CI log, a log collector)."""

from __future__ import annotations

import urllib.request
from collections import defaultdict, deque
from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

Series = dict[tuple[str, str, str, str], dict[str, float]]
"""(window, team, channel, priority) -> {metric name without cx_ prefix: value}; the window is
"" for tickets open now, the segment ("", "", "") for the account numbers."""

ACCOUNT_NAMES = frozenset(
    {
        "cx_mrr",
        "cx_accounts_paying",
        "cx_account_churn_ratio",
        "cx_net_revenue_retention_ratio",
        "cx_gross_revenue_retention_ratio",
    }
)
"""The account numbers the demo shows."""


def scrape(metrics_url: str) -> tuple[Series, dict[str, float]]:
    """The worker's windowed series, and its cx_events_total per outcome."""
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        text = response.read().decode()
    series: Series = defaultdict(dict)
    outcomes: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "cx_events_total":
                outcomes[labels["outcome"]] += sample.value
            elif sample.name == "cx_tickets_open":
                key = ("", labels["team"], labels["channel"], labels["priority"])
                series[key]["tickets_open"] = sample.value
            elif sample.name in ACCOUNT_NAMES:
                series[(labels.get("window", ""), "", "", "")][sample.name[3:]] = sample.value
            elif "window" in labels and "team" in labels:  # (account metrics have no segment)
                name = sample.name[3:] + {"0.5": "_p50", "0.9": "_p90"}.get(
                    labels.get("quantile", ""), ""
                )
                key = (labels["window"], labels["team"], labels["channel"], labels["priority"])
                series[key][name] = sample.value
    return series, outcomes


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def per_second(rate: float) -> str:
    """An event rate for people: two significant digits below 10/s (0.3, not 0), whole above."""
    return f"{rate:.2g}" if rate < 10 else f"{rate:,.0f}"


class Rate:
    """Events per second over the last `span` seconds, from a running count: at a few events a
    second, the count moves by one or none between two scrapes a couple of seconds apart."""

    def __init__(self, span: float = 10.0) -> None:
        self.span = span
        self._counts: deque[tuple[float, float]] = deque()

    def add(self, count: float, now: float) -> float:
        """Note the count at `now`; the rate since the oldest count within the span."""
        counts = self._counts
        counts.append((now, count))
        while len(counts) > 2 and now - counts[1][0] >= self.span:
            counts.popleft()
        then, before = counts[0]
        return 0.0 if now <= then else max(count - before, 0.0) / (now - then)


def _number(value: float | None, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def _quantiles(metrics: Mapping[str, float], name: str) -> str:
    return f"{_duration(metrics.get(name + '_p50'))} / {_duration(metrics.get(name + '_p90'))}"


def _row(metrics: Mapping[str, float]) -> list[str]:
    get = metrics.get
    nps, moe = get("nps"), get("nps_margin_of_error")
    csat, low, high = get("csat_ratio"), get("csat_ratio_lower"), get("csat_ratio_upper")
    return [
        "-" if nps is None else f"{nps:+.0f} ±{moe or 0:.0f}",
        f"{get('nps_responses', 0):.0f}",
        "-" if csat is None else f"{csat:.0%} [{low or 0:.0%}-{high or 0:.0%}]",
        f"{get('csat_responses', 0):.0f}",
        _number(get("ces_score_avg"), "{:.2f}"),
        _quantiles(metrics, "first_response_seconds"),
        _quantiles(metrics, "resolution_seconds"),
        _number(get("first_response_sla_breach_ratio"), "{:.0%}"),
        _number(get("reopened_ratio"), "{:.0%}"),
        _number(get("first_contact_resolution_ratio"), "{:.0%}"),
        f"{get('tickets_opened', 0):.0f}",
    ]


HEADERS = [
    "NPS",
    "n",
    "CSAT [95% CI]",
    "n",
    "CES",
    "FRT p50/p90",
    "TTR p50/p90",
    "FRT SLA miss",
    "reopened",
    "FCR",
    "opened",
]


def render(
    series: Series, outcomes: Mapping[str, float], rate: float, metrics_url: str, sent: int
) -> Group:
    overall = Table(title="Whole support organisation", expand=True)
    overall.add_column("window")
    for header in HEADERS:
        overall.add_column(header, justify="right")
    windows = sorted(
        {key[0] for key in series if key[0] and key[1]},
        key=lambda w: ("hdw".find(w[-1]), float(w[:-1])),
    )
    for window in windows:
        overall.add_row(window, *_row(series.get((window, "all", "all", "all"), {})))
    teams = Table(title="Per team, last 24h", expand=True)
    teams.add_column("team")
    for header in HEADERS:
        teams.add_column(header, justify="right")
    teams.add_column("backlog", justify="right")
    for window, team, channel, priority in sorted(series):
        if window == "24h" and team != "all" and channel == priority == "all":
            backlog = series.get(("", team, "all", "all"), {}).get("tickets_open", 0)
            teams.add_row(team, *_row(series[(window, team, channel, priority)]), f"{backlog:.0f}")
    backlog = series.get(("", "all", "all", "all"), {}).get("tickets_open", 0)
    status = Text.assemble(
        ("cx-stream demo  ", "bold"),
        f"metrics: {metrics_url}   backlog: {backlog:.0f} open tickets   ",
        f"processed: {sum(outcomes.values()):.0f} ({per_second(rate)}/s)   ",
        f"invalid: {outcomes.get('invalid', 0):.0f}   ",
        f"duplicates: {outcomes.get('duplicate', 0):.0f}   ",
        f"simulator sent: {sent}   Ctrl-C stops everything",
    )
    customers = Text.assemble(("Customers  ", "bold"), customer_numbers(series))
    return Group(Panel(status), Panel(customers), overall, teams)


def customer_numbers(series: Series, window: str = "30d") -> str:
    """MRR, paying accounts, and the `window` account window's churn, NRR and GRR."""
    now = series.get(("", "", "", ""), {})
    windowed = series.get((window, "", "", ""), {})
    mrr, paying = now.get("mrr"), now.get("accounts_paying")
    return (
        f"MRR {_number(mrr, '{:,.0f}')}   paying accounts {_number(paying, '{:,.0f}')}   "
        f"{window} logo churn {_number(windowed.get('account_churn_ratio'), '{:.1%}')}   "
        f"NRR {_number(windowed.get('net_revenue_retention_ratio'), '{:.1%}')}   "
        f"GRR {_number(windowed.get('gross_revenue_retention_ratio'), '{:.1%}')}"
    )


def status_line(
    series: Series, outcomes: Mapping[str, float], rate: float, sent: int, window: str = "24h"
) -> str:
    """The live view in one plain line, for output that is not a terminal."""
    whole = series.get((window, "all", "all", "all"), {})
    backlog = series.get(("", "all", "all", "all"), {}).get("tickets_open", 0)
    nps, csat = whole.get("nps"), whole.get("csat_ratio")
    return (
        f"processed {sum(outcomes.values()):.0f} events ({per_second(rate)}/s;"
        f" {outcomes.get('invalid', 0):.0f} invalid, {outcomes.get('duplicate', 0):.0f}"
        f" duplicates), simulator sent {sent}, backlog {backlog:.0f} open tickets; last {window}:"
        f" NPS {'-' if nps is None else f'{nps:+.0f}'} ({whole.get('nps_responses', 0):.0f}"
        f" responses), CSAT {'-' if csat is None else f'{csat:.0%}'}"
        f" ({whole.get('csat_responses', 0):.0f}), FRT p50/p90"
        f" {_quantiles(whole, 'first_response_seconds')}; {customer_numbers(series)}"
    )
