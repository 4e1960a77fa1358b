"""Settings from CX_* environment variables (CLI flags override them)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

from . import security
from .business_hours import Schedules, load_schedules
from .experience import parse_weights
from .pipeline import TableName
from .tickets import DEFAULT_SLA, SlaClock, SlaTargets, TicketRules
from .windows import WindowSpec, parse_duration, parse_windows

PRIORITIES = ("low", "normal", "high", "urgent")
ProcessingGuarantee = Literal["at_least_once", "exactly_once"]
GUARANTEES: tuple[ProcessingGuarantee, ...] = ("at_least_once", "exactly_once")
T = TypeVar("T")


class ConfigError(ValueError):
    """A setting a person gave is unusable; the message names the setting."""


def parse_targets(text: str, defaults: Mapping[str, float]) -> dict[str, float]:
    """'urgent=1h,high=4h' -> seconds per priority, the priorities not named keep `defaults`."""
    targets = dict(defaults)
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        priority, _, duration = part.partition("=")
        if priority.strip() not in PRIORITIES:
            raise ValueError(f"{priority.strip()!r} is not a priority ({', '.join(PRIORITIES)})")
        targets[priority.strip()] = parse_duration(duration)
    return targets


@dataclass(frozen=True)
class Settings:
    broker: str = "kafka://localhost:9092"
    web_port: int = 6066
    web_host: str = "0.0.0.0"
    data_dir: str = "./cx-data"
    app_id: str = "cx-stream"
    partitions: int = 8
    replication_factor: int = 1
    windows: tuple[WindowSpec, ...] = field(default_factory=lambda: parse_windows("1h,24h,7d,28d"))
    topic_prefix: str = ""
    max_segment_values: int = 50
    snapshot_interval: float = 10.0
    sla: SlaTargets = DEFAULT_SLA
    embedded_broker: bool = False
    processing_guarantee: ProcessingGuarantee = "at_least_once"
    """exactly_once: each ingest batch's changelog records, dead letters and input offsets
    (and each partition's partials) commit in one Kafka transaction (docs/contract.md, 6)."""
    session_timeout: float = 45.0
    """Seconds the consumer group waits for a silent worker before its partitions move
    (Kafka's session.timeout.ms; the Java client's default since Kafka 3.0)."""
    log_level: str = "info"
    state_retention: float | None = None
    """Seconds after which settled state is forgotten; None: the largest window + 7 days."""
    sweep_interval: float = 15 * 60.0
    """Seconds between retention sweeps (the contract allows an hour past the horizon)."""
    business_hours: Schedules | None = None
    """Opening hours from CX_BUSINESS_HOURS: FRT and TTR are also measured in business time."""
    sla_clock: SlaClock = "calendar"
    kafka_security: security.KafkaSecurity = field(default_factory=security.KafkaSecurity)
    """TLS and SASL of every Kafka client, from the CX_KAFKA_* variables."""
    account_windows: tuple[WindowSpec, ...] = field(
        default_factory=lambda: parse_windows("30d,90d,365d")
    )
    """CX_ACCOUNT_WINDOWS: the revenue and retention windows (docs/contract.md 7.3)."""
    account_interval: float = 60.0
    """CX_ACCOUNT_INTERVAL: seconds between evaluation instants (as_of), on one grid."""
    account_retention: float = 730 * 86400.0
    """CX_ACCOUNT_RETENTION: an account not paying and without events for this long goes."""
    currency: str = "USD"
    """CX_CURRENCY: the reporting currency; subscription events in another are invalid."""
    gross_margin: float = 1.0
    """CX_GROSS_MARGIN: the share of revenue kept, for the customer lifetime value."""
    experience_lookback: float = 90 * 86400.0
    """CX_EXPERIENCE_LOOKBACK: how far back an account's support experience reaches (7.4)."""
    health_weights: Mapping[str, float] = field(default_factory=lambda: parse_weights(""))
    """CX_HEALTH_WEIGHTS: each health factor's weight (7.4); 1 where not named."""

    def ticket_rules(self) -> TicketRules:
        return TicketRules(self.sla, self.business_hours, self.sla_clock)

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    @property
    def retention_seconds(self) -> float:
        """CX_STATE_RETENTION; by default the largest window + 7 days (docs/contract.md, 3)."""
        if self.state_retention is not None:
            return self.state_retention
        return max(spec.seconds for spec in self.windows) + 7 * 86400

    @property
    def experience_horizon(self) -> float:
        """How long what an account's tickets and responses contributed may still count: the
        largest account window plus the lookback (7.4)."""
        largest = max(spec.seconds for spec in self.account_windows)
        return largest + self.experience_lookback

    @property
    def retention_by_table(self) -> dict[TableName, float]:
        """Seconds each state table keeps what may be forgotten."""
        tickets = self.retention_seconds
        return {"tickets": tickets, "surveys": tickets, "accounts": self.account_retention}

    @property
    def publish_interval(self) -> float:
        """How often partitions send their window totals to the merging worker: this sets how
        soon an event shows on /metrics (changed series only, so an idle worker sends none)."""
        return max(0.2, min(0.25, self.snapshot_interval / 5))

    def with_overrides(self, **overrides: Any) -> Settings:
        return replace(
            self, **{key: value for key, value in overrides.items() if value is not None}
        )


def _number(
    name: str, text: str, kind: type[int] | type[float], minimum: float, maximum: float
) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not a number") from None
    if not math.isfinite(value):
        raise ConfigError(f"{name}={text!r} is not a finite number")
    if value < minimum:
        raise ConfigError(f"{name}={text!r} must be at least {minimum:g}")
    if value > maximum:
        raise ConfigError(f"{name}={text!r} must be at most {maximum:g}")
    return value


def _parsed(name: str, env: Mapping[str, str], parse: Callable[[str], T]) -> T:
    try:
        return parse(env.get(name, ""))
    except ValueError as error:
        raise ConfigError(f"{name}: {error}") from None


def parse_currency(text: str) -> str:
    """An ISO 4217 code: three capital letters."""
    if len(text) != 3 or not text.isascii() or not text.isupper() or not text.isalpha():
        raise ValueError(f"{text!r} is not an ISO 4217 currency code like USD or EUR")
    return text


def parse_share(text: str) -> float:
    """A share between 0 (exclusive) and 1."""
    try:
        share = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not 0 < share <= 1:
        raise ValueError(f"{text!r} is not a share above 0 and at most 1")
    return share


def parse_guarantee(text: str) -> ProcessingGuarantee:
    if text not in GUARANTEES:
        raise ConfigError(
            f"CX_PROCESSING_GUARANTEE={text!r} is neither at_least_once nor exactly_once"
        )
    return text


def from_env(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from the CX_* variables of `environ` (default: the process environment)."""
    env = os.environ if environ is None else environ
    settings = Settings()
    values: dict[str, Any] = {}
    simple = {
        "CX_BROKER": "broker",
        "CX_WEB_HOST": "web_host",
        "CX_DATA_DIR": "data_dir",
        "CX_APP_ID": "app_id",
        "CX_TOPIC_PREFIX": "topic_prefix",
        "CX_LOG_LEVEL": "log_level",
    }
    for variable, attribute in simple.items():
        if variable in env:
            values[attribute] = env[variable]
    inf = math.inf
    numbers: dict[str, tuple[str, type[int] | type[float], float, float]] = {
        "CX_WEB_PORT": ("web_port", int, 1, 65535),
        "CX_PARTITIONS": ("partitions", int, 1, inf),
        "CX_MAX_SEGMENT_VALUES": ("max_segment_values", int, 1, inf),
        "CX_REPLICATION_FACTOR": ("replication_factor", int, 1, inf),
        "CX_SNAPSHOT_INTERVAL": ("snapshot_interval", float, 0.1, inf),
        "CX_RETENTION_SWEEP_INTERVAL": ("sweep_interval", float, 1, inf),
    }
    durations = {"CX_KAFKA_SESSION_TIMEOUT": "session_timeout"}
    for variable, attribute in durations.items():
        if variable in env:
            values[attribute] = _parsed(variable, env, parse_duration)
    for variable, (attribute, kind, minimum, maximum) in numbers.items():
        if variable in env:
            values[attribute] = _number(variable, env[variable], kind, minimum, maximum)
    if "CX_WINDOWS" in env:
        values["windows"] = _parsed("CX_WINDOWS", env, parse_windows)
    if env.get("CX_BUSINESS_HOURS"):
        values["business_hours"] = _parsed("CX_BUSINESS_HOURS", env, load_schedules)
    if "CX_SLA_CLOCK" in env:
        clock = env["CX_SLA_CLOCK"]
        if clock not in ("calendar", "business"):
            raise ConfigError(f"CX_SLA_CLOCK={clock!r} is neither calendar nor business")
        values["sla_clock"] = clock
    if "CX_ACCOUNT_WINDOWS" in env:
        values["account_windows"] = _parsed("CX_ACCOUNT_WINDOWS", env, parse_windows)
    for variable, attribute in (
        ("CX_ACCOUNT_INTERVAL", "account_interval"),
        ("CX_ACCOUNT_RETENTION", "account_retention"),
        ("CX_EXPERIENCE_LOOKBACK", "experience_lookback"),
    ):
        if variable in env:
            values[attribute] = _parsed(variable, env, parse_duration)
    if "CX_CURRENCY" in env:
        values["currency"] = _parsed("CX_CURRENCY", env, parse_currency)
    if "CX_GROSS_MARGIN" in env:
        values["gross_margin"] = _parsed("CX_GROSS_MARGIN", env, parse_share)
    if "CX_HEALTH_WEIGHTS" in env:
        values["health_weights"] = _parsed("CX_HEALTH_WEIGHTS", env, parse_weights)
    if "CX_PROCESSING_GUARANTEE" in env:
        values["processing_guarantee"] = parse_guarantee(env["CX_PROCESSING_GUARANTEE"])
    if "CX_STATE_RETENTION" in env:
        values["state_retention"] = _parsed("CX_STATE_RETENTION", env, parse_duration)
    defaults = settings.sla
    first_response = _parsed(
        "CX_FIRST_RESPONSE_SLA", env, lambda text: parse_targets(text, defaults.first_response)
    )
    resolution = _parsed(
        "CX_RESOLUTION_SLA", env, lambda text: parse_targets(text, defaults.resolution)
    )
    values["sla"] = SlaTargets(first_response, resolution)
    try:
        values["kafka_security"] = security.from_env(env)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    values["embedded_broker"] = env.get("CX_EMBEDDED_BROKER", "").lower() in {"1", "true", "yes"}
    return check(replace(settings, **values))


def check(settings: Settings) -> Settings:
    """Refuse combinations that would make published numbers wrong."""
    if settings.sla_clock == "business" and settings.business_hours is None:
        raise ConfigError("CX_SLA_CLOCK=business needs opening hours: set CX_BUSINESS_HOURS")
    if settings.processing_guarantee == "exactly_once" and settings.embedded_broker:
        raise ConfigError(
            "CX_PROCESSING_GUARANTEE=exactly_once needs Kafka transactions, which the embedded"
            " broker lacks: set CX_BROKER to an Apache Kafka cluster"
        )
    if settings.account_retention < settings.experience_horizon:
        raise ConfigError(
            f"CX_ACCOUNT_RETENTION ({settings.account_retention:g}s) is shorter than the largest"
            f" account window plus CX_EXPERIENCE_LOOKBACK ({settings.experience_horizon:g}s):"
            " accounts and support experience still counted in a window would be forgotten"
        )
    largest = max(spec.seconds for spec in settings.windows)
    if settings.retention_seconds < largest:
        raise ConfigError(
            f"CX_STATE_RETENTION ({settings.retention_seconds:g}s) is shorter than the largest"
            f" window ({largest:g}s): state still counted in a window would be forgotten"
        )
    return settings
