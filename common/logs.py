"""Logging for every process: one JSON object a line (LOG_FORMAT=json) or plain text.

Each line carries the id of what it belongs to: ``request_id`` on API lines (also returned in
``X-Request-ID``), ``task_id`` on worker lines. Both come from a context variable set at the
start of a request or a task.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys

from pythonjsonlogger.json import JsonFormatter

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
task_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("task_id", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(context_id)s] %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"


class ContextFilter(logging.Filter):
    """Puts the current request or task id on every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid, tid = request_id.get(), task_id.get()
        if rid and not hasattr(record, "request_id"):
            record.request_id = rid
        if tid and not hasattr(record, "task_id"):
            record.task_id = tid
        record.context_id = rid or tid or "-"
        return True


#: Control characters (C0, DEL, C1) and Unicode's line and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class TextFormatter(logging.Formatter):
    """Plain lines in which a message cannot start a line of its own: control characters that a
    client put into a path or a header are written as ``\\xNN``, so no request can forge a
    log line. (A traceback after the message keeps its line breaks.)"""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = _CONTROL.sub(_escaped, record.message)
        return super().formatMessage(record)


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def make_formatter(log_format: str) -> logging.Formatter:
    """The formatter of every log line: JSON objects, or text with the request/task id."""
    if log_format == "json":
        return JsonFormatter(
            JSON_FIELDS,
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            json_ensure_ascii=False,
            reserved_attrs=[*_RESERVED, "context_id"],
        )
    return TextFormatter(TEXT_FORMAT)


def dict_config(log_format: str, level: str = "INFO", *, access: bool = False) -> dict:
    """The same set-up as ``configure_logging`` for ``logging.config.dictConfig`` (gunicorn).

    gunicorn writes access lines whenever a logging configuration is given; the app writes
    one line a request itself (``api.access``, with its request id), so gunicorn's are kept
    only when asked for (``access``)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter}},
        "formatters": {"app": {"()": make_formatter, "log_format": log_format}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "filters": ["context"],
                "formatter": "app",
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": [], "propagate": True},
            "gunicorn.access": {
                "level": level if access else "WARNING",
                "handlers": [],
                "propagate": True,
            },
        },
    }


def configure_logging(log_format: str, level: int = logging.INFO) -> None:
    """Replace the root logger's handlers with one on stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(make_formatter(log_format))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


_RESERVED = [
    "args", "created", "exc_info", "exc_text", "filename", "funcName", "levelno", "lineno",
    "module", "msecs", "msg", "pathname", "process", "processName", "relativeCreated",
    "stack_info", "thread", "threadName", "taskName",
]  # fmt: skip
