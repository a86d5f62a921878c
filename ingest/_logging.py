"""One logging configuration for the service and its workers, uvicorn's lines included: ISO 8601
timestamps with milliseconds and the UTC offset, as text (`2026-01-31T14:02:07.513+00:00 INFO
fieldlink.ingest: ...`) or as one JSON object per line (`--log-format json`), for a log collector."""

from __future__ import annotations

import json
import logging
import logging.config
import time
from typing import Any, Literal

LogFormat = Literal["text", "json"]


def iso_time(created: float) -> str:
    """`created` (epoch seconds) as ISO 8601 local time with milliseconds and the UTC offset."""
    local = time.localtime(created)
    offset = time.strftime("%z", local)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', local)}.{int(created % 1 * 1000):03d}{offset[:3]}:{offset[3:]}"


class TextFormatter(logging.Formatter):
    def __init__(self, tag: str = "") -> None:
        super().__init__()
        self._tag = tag

    def format(self, record: logging.LogRecord) -> str:
        line = f"{iso_time(record.created)} {record.levelname} {record.name}{self._tag}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def __init__(self, tag: str = "") -> None:
        super().__init__()
        self._tag = tag

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": iso_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self._tag:
            entry["process"] = self._tag.strip(" []")
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def logging_config(level: str = "info", fmt: LogFormat = "text", tag: str = "") -> dict[str, Any]:
    """A dictConfig for the root logger and uvicorn's (which then carry no handlers of their own):
    pass it to `uvicorn.run(log_config=...)` too, or uvicorn installs its own formats. `tag` follows
    the logger's name in text lines (`[worker 2]`)."""
    formatter = {"()": JsonFormatter if fmt == "json" else TextFormatter, "tag": tag}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"fieldlink": formatter},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "fieldlink", "stream": "ext://sys.stderr"}
        },
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        "loggers": {
            # uvicorn's loggers go to the root's handler, in the same format.
            "uvicorn": {"level": level.upper(), "handlers": [], "propagate": True},
            "uvicorn.error": {"level": level.upper(), "handlers": [], "propagate": True},
            "uvicorn.access": {"level": level.upper(), "handlers": [], "propagate": True},
            # One line per write request drowns the real news.
            "httpx": {"level": "WARNING"},
        },
    }


def configure(level: str = "info", fmt: LogFormat = "text", tag: str = "") -> dict[str, Any]:
    """Configure logging for this process; returns the configuration (for uvicorn)."""
    config = logging_config(level, fmt, tag)
    logging.config.dictConfig(config)
    return config
