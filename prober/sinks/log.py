"""Structured logging: JSON or logfmt lines, one per failure, never bodies or secrets."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from prober.config.load import ConfigError
from prober.result import Result

log = logging.getLogger("prober")

_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        + f".{int(record.msecs):03d}Z",
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    fields.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
    if record.exc_info:
        fields["exc"] = logging.Formatter().formatException(record.exc_info)
    return fields


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), default=str)


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in _fields(record).items())


def _logfmt_value(value: Any) -> str:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    if text and not any(c in text for c in ' ="\n\\'):
        return text
    return json.dumps(text)


# Prometheus tools spell the level `warn`; Python's name is `warning`. Both are accepted.
LOG_LEVELS = ("debug", "info", "warn", "warning", "error")


def setup_logging(level: str = "info", fmt: str = "logfmt") -> None:
    """Route all logs to stderr in one structured format; quiet APScheduler's per-run chatter.

    Python warnings go through the logger too, so in JSON mode every line is JSON.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel("WARNING" if level == "warn" else level.upper())
    logging.captureWarnings(True)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def log_config_error(what: str, error: ConfigError) -> None:
    """One line per located issue (`file:line: key: message`); issues never echo values."""
    for issue in error.issues:
        log.error(what, extra={"error": str(issue)})


def log_recovery(result: Result, component: str, failing_since: float) -> None:
    """One line when a check confirmed failing is confirmed passing again, with how long it
    was failing: from `failing_since` (the start of the run that confirmed the failure) to
    the start of this one."""
    log.info(
        "check recovered",
        extra={
            "check": result.check,
            "component": component,
            "failing_seconds": round(max(result.started_at - failing_since, 0.0), 1),
        },
    )


def log_failure(result: Result, component: str) -> None:
    """One line per failed run, with bounded fields; the message is already secret-free."""
    log.warning(
        "check failed",
        extra={
            "check": result.check,
            "component": component,
            "step": result.failed_step,
            "reason": str(result.reason),
            "attempts": result.attempts,
            "duration_ms": round(result.duration * 1000, 1),
            "detail": result.message,
        },
    )


class Throttled:
    """One warning for a condition that may repeat thousands of times a second (no file
    descriptors left, too many web connections): said at once, then at most once per
    `interval` seconds with how many times it happened since."""

    def __init__(self, logger: logging.Logger, message: str, interval: float = 60.0) -> None:
        self._logger = logger
        self._message = message
        self._interval = interval
        self._said_at: float | None = None
        self._unsaid = 0

    def note(self, **fields: Any) -> None:
        """Count one occurrence; log it (with the count since the last line) if it is time."""
        self._unsaid += 1
        now = time.monotonic()
        if self._said_at is not None and now - self._said_at < self._interval:
            return
        self._logger.warning(self._message, extra={**fields, "times": self._unsaid})
        self._said_at = now
        self._unsaid = 0
