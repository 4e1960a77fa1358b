"""Structured logs: one JSON object per line, with the `extra=` fields of each call."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({key: value for key, value in vars(record).items() if key not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class HideSaslTokens(logging.Filter):
    """aiokafka logs every request and response at debug level, SASL tokens included, and a
    PLAIN token holds the password: those are logged without their content."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                f"{type(arg).__name__}(<hidden>)"
                if type(arg).__name__.startswith("SaslAuthenticate")
                else arg
                for arg in record.args
            )
        return True


def logging_config(level: str) -> dict[str, Any]:
    """A logging.dictConfig that sends every logger, Faust's too, through JsonFormatter."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "filters": {"sasl": {"()": HideSaslTokens}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["sasl"]}
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
    }
