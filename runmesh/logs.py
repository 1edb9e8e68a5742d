"""Log set-up shared by the three commands: text for people, JSON for machines.

One line per event an operator cares about; ``key=value`` pairs such as
``org_id=`` and ``node_id=`` are written into the message, and in JSON mode
they are also lifted into fields of their own so a log pipeline can filter
on them without parsing text.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

from pythonjsonlogger.json import JsonFormatter

_PAIR = re.compile(r"\b([a-z_]+)=(\S+)")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class _FieldsFormatter(JsonFormatter):
    def add_fields(
        self,
        log_record: dict[str, Any],
        record: logging.LogRecord,
        message_dict: dict[str, Any],
    ) -> None:
        super().add_fields(log_record, record, message_dict)
        for key, value in _PAIR.findall(record.getMessage()):
            log_record.setdefault(key, value)


def configure(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(
            _FieldsFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Libraries narrate at INFO; their warnings still come through.
    for noisy in ("sqlalchemy", "alembic", "uvicorn.access", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
