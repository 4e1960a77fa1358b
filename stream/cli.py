"""cx-stream worker | demo | simulate."""

from __future__ import annotations

import sys
from typing import Any

import click

from .config import ConfigError, Settings, from_env
from .windows import parse_windows


class Failure(click.ClickException):
    """An error a person can act on, printed as one line."""


def _settings(**overrides: Any) -> Settings:
    try:
        settings = from_env()
        if overrides.get("windows") is not None:
            overrides["windows"] = parse_windows(overrides["windows"])
        return settings.with_overrides(**overrides)
    except (ConfigError, ValueError) as error:
        raise Failure(str(error)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cx-stream")
def cli() -> None:
    """Real-time customer-experience metrics from helpdesk events on Kafka."""


@cli.command()
@click.option("--broker", help="Kafka URL, e.g. kafka://kafka:9092 [CX_BROKER]")
@click.option("--web-port", type=int, help="HTTP port of /metrics and /health [CX_WEB_PORT]")
@click.option("--web-host", help="address the HTTP server binds [CX_WEB_HOST]")
@click.option("--data-dir", help="where the worker keeps local files [CX_DATA_DIR]")
@click.option("--app-id", help="Kafka consumer group of the workers [CX_APP_ID]")
@click.option("--partitions", type=int, help="partitions of the topics it creates [CX_PARTITIONS]")
@click.option("--windows", help="rolling windows, e.g. 1h,24h,7d,28d [CX_WINDOWS]")
@click.option("--topic-prefix", help="prefix of every topic name [CX_TOPIC_PREFIX]")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
def worker(**options: Any) -> None:
    """Run one worker; workers with the same app id share the partitions."""
    from .app import run_worker

    settings = _settings(**options)
    run_worker(settings)


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as error:
        click.echo(f"cx-stream: error: {error.format_message()}", err=True)
        sys.exit(error.exit_code)
