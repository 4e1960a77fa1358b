"""The demo's parts that need no broker: the port probe, the event rate it shows, its plain
status lines, and the size of the history it promises."""

from __future__ import annotations

import http.server
import re
import socket
import threading
import time

from rich.console import Console

from stream.broker import free_port
from stream.demo import port_is_free
from stream.live import Rate, Series, per_second, render, scrape, status_line
from stream.simulate import Traffic
from tests.kafka import run_cli, wait_for


def time_wait_on(port: int) -> None:
    """Leave a connection in TIME_WAIT on `port` of the loopback address, as a stopped demo's
    scrapes leave them on its worker's port: the server side closes first, and its end of the
    connection waits there for a minute."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen()
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = server.accept()
            accepted.close()  # the server's end closes first: it is the one left in TIME_WAIT
            assert client.recv(1) == b""

    def waiting() -> bool:
        with open("/proc/net/tcp") as table:
            rows = [line.split() for line in table.readlines()[1:]]
        # local address 127.0.0.1:port in hex, state 06 (TIME_WAIT)
        return any(row[1] == f"0100007F:{port:04X}" and row[3] == "06" for row in rows)

    wait_for(waiting, 10, f"a TIME_WAIT connection on port {port}", interval=0.05)


def test_a_port_left_in_time_wait_is_free_and_a_listened_one_is_not() -> None:
    """A demo restarted within a minute keeps port 6066: the scrapes of the one before left
    TIME_WAIT connections there, which the worker's server binds over (SO_REUSEADDR)."""
    port = free_port()
    time_wait_on(port)
    assert port_is_free(port)
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen()
        assert not port_is_free(port)
    with socket.socket() as everywhere:  # a server on every address holds loopback's port too
        everywhere.bind(("0.0.0.0", 0))
        everywhere.listen()
        assert not port_is_free(everywhere.getsockname()[1])


def test_the_rate_is_readable_at_a_fraction_of_an_event_a_second() -> None:
    assert [per_second(r) for r in (0, 0.3, 0.04, 2.5, 9.4, 12.4, 7658.7)] == [
        "0",
        "0.3",
        "0.04",
        "2.5",
        "9.4",
        "12",
        "7,659",
    ]
    console = Console(width=400, record=True)
    console.print(render({}, {"accepted": 1234.0}, 0.3, "http://127.0.0.1:6066/metrics", 1300))
    assert "processed: 1234 (0.3/s)" in console.export_text()


def test_the_rate_is_over_the_last_ten_seconds() -> None:
    """Scrapes two seconds apart at 0.3 events/s see the count move by 0 or 1: over two seconds
    that is 0 or 0.5/s; over ten seconds it is what it is."""
    rate = Rate(span=10)
    count, shown = 0, []
    for tick in range(30):
        now = 1000.0 + 2 * tick
        count = int(0.3 * 2 * tick)  # 0.3 events a second, whole events
        shown.append(rate.add(count, now))
    assert shown[0] == 0.0
    assert all(abs(value - 0.3) <= 0.1 for value in shown[5:]), shown
    # a burst (a month of history) shows at once and is gone from the rate ten seconds later
    assert rate.add(count + 80_000, 1062.0) > 7000
    for tick in range(1, 6):
        last = rate.add(count + 80_000, 1062.0 + 2 * tick)
    assert last == 0.0


def test_a_status_line_says_what_the_live_view_says() -> None:
    series: Series = {
        ("24h", "all", "all", "all"): {
            "nps": 23.4,
            "nps_responses": 41,
            "csat_ratio": 0.856,
            "csat_responses": 52,
            "first_response_seconds_p50": 3000,
            "first_response_seconds_p90": 20000,
        },
        ("", "all", "all", "all"): {"tickets_open": 321},
        ("", "", "", ""): {"mrr": 148643.5, "accounts_paying": 577},
        ("30d", "", "", ""): {
            "account_churn_ratio": 0.0388,
            "net_revenue_retention_ratio": 0.9709,
            "gross_revenue_retention_ratio": 0.95,
        },
    }
    outcomes = {"accepted": 12000.0, "duplicate": 120.0, "invalid": 3.0, "anomaly": 0.0}
    assert status_line(series, outcomes, 0.3, 12130) == (
        "processed 12123 events (0.3/s; 3 invalid, 120 duplicates), simulator sent 12130,"
        " backlog 321 open tickets; last 24h: NPS +23 (41 responses), CSAT 86% (52),"
        " FRT p50/p90 50m / 5.6h; MRR 148,644   paying accounts 577   30d logo churn 3.9%"
        "   NRR 97.1%   GRR 95.0%"
    )
    assert status_line({}, {}, 0.0, 0) == (
        "processed 0 events (0/s; 0 invalid, 0 duplicates), simulator sent 0, backlog 0 open"
        " tickets; last 24h: NPS - (0 responses), CSAT - (0), FRT p50/p90 - / -; MRR -"
        "   paying accounts -   30d logo churn -   NRR -   GRR -"
    )


def test_the_history_is_as_large_as_the_help_says() -> None:
    """`cx-stream demo --help` gives the size of the default history (28 days at 0.08 events/s
    at peak): what the simulator schedules, within 3%, whatever the day of the week."""
    help_text = " ".join(run_cli("demo", "--help").stdout.split())
    found = re.search(r"about ([\d,]+) events in 28 days", help_text)
    assert found, help_text
    promised = int(found.group(1).replace(",", ""))
    now = time.time()
    for seed, start in enumerate((now, now + 2.5 * 86400, now + 5 * 86400)):
        traffic = Traffic(10.0, seed)
        traffic.backfill(start - 28 * 86400, start, 0.08)
        scheduled = sum(1 for _ in traffic.due(start))
        assert abs(scheduled - promised) <= 0.03 * promised, (scheduled, promised)


EXPOSITION = """# HELP cx_tickets_opened Tickets opened in the window
# TYPE cx_tickets_opened gauge
cx_tickets_opened{window="1h",team="all",channel="all",priority="all"} 12.0
cx_tickets_opened{window="1h",team="billing",channel="all",priority="all"} 5.0
# HELP cx_first_response_seconds First response time
# TYPE cx_first_response_seconds gauge
cx_first_response_seconds{window="1h",team="all",channel="all",priority="all",quantile="0.5"} 60.0
# HELP cx_tickets_open Tickets open now
# TYPE cx_tickets_open gauge
cx_tickets_open{team="all",channel="all",priority="all"} 7.0
# HELP cx_net_revenue_retention_ratio Net revenue retention over the window
# TYPE cx_net_revenue_retention_ratio gauge
cx_net_revenue_retention_ratio{window="30d"} 1.02
# HELP cx_arpa Average revenue per paying account
# TYPE cx_arpa gauge
cx_arpa 400.0
# HELP cx_mrr Monthly recurring revenue now
# TYPE cx_mrr gauge
cx_mrr 1200.0
# HELP cx_events_total Input records processed
# TYPE cx_events_total counter
cx_events_total{topic="ticket-opened",outcome="accepted"} 17.0
cx_events_total{topic="ticket-replied",outcome="accepted"} 3.0
cx_events_total{topic="ticket-opened",outcome="invalid"} 0.0
"""


def test_the_view_reads_the_segments_series_and_the_customer_numbers() -> None:
    """The account metrics (a window or none, no segment) came after the live view: it stopped
    the demo with a KeyError. It shows some of them, and passes over the others."""

    class Metrics(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = EXPOSITION.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with http.server.HTTPServer(("127.0.0.1", 0), Metrics) as server:
        serving = threading.Thread(target=server.serve_forever, daemon=True)
        serving.start()
        try:
            series, outcomes = scrape(f"http://127.0.0.1:{server.server_address[1]}/metrics")
        finally:
            server.shutdown()
    assert series == {
        ("1h", "all", "all", "all"): {"tickets_opened": 12.0, "first_response_seconds_p50": 60.0},
        ("1h", "billing", "all", "all"): {"tickets_opened": 5.0},
        ("", "all", "all", "all"): {"tickets_open": 7.0},
        ("30d", "", "", ""): {"net_revenue_retention_ratio": 1.02},
        ("", "", "", ""): {"mrr": 1200.0},
    }
    assert outcomes == {"accepted": 20.0, "invalid": 0.0}
