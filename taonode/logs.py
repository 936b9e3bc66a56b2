"""Logging: structlog configured once at start-up; stdlib loggers (aiohttp, web3, libp2p) go
through the same processors, so every line has one format and passes the redaction filter."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, Literal, TextIO

import structlog

LogFormat = Literal["json", "console"]
REDACTED = "[REDACTED]"
_SECRET_KEY = re.compile(r"(pass(word|phrase)?|secret|private_?key|mnemonic|keystore_json)", re.I)
# 32-byte hex strings next to "key" look like private keys; better a redacted digest than a leak.
_HEX_KEY = re.compile(r"(?i)(key\W{0,3})(0x)?[0-9a-f]{64}")


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Processor that blanks values under secret-looking keys and key-like hex in messages."""
    for key in list(event_dict):
        if _SECRET_KEY.search(key):
            event_dict[key] = REDACTED
        elif isinstance(event_dict[key], str):
            event_dict[key] = _HEX_KEY.sub(lambda m: m.group(1) + REDACTED, event_dict[key])
    return event_dict


def configure_logging(
    fmt: LogFormat = "json", level: str = "info", stream: TextIO | None = None
) -> None:
    """Route structlog and stdlib logging to ``stream`` (stderr) in one format."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=stream is None and sys.stderr.isatty())
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    numeric = logging.getLevelName(level.upper())
    root.setLevel(numeric)
    # Chatty libraries stay at warning unless the operator asks for debug.
    for noisy in ("aiohttp.access", "web3", "urllib3", "libp2p", "asyncio", "multiaddr"):
        logging.getLogger(noisy).setLevel(numeric if numeric <= logging.DEBUG else logging.WARNING)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def get_logger(name: str, **bound: Any) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name).bind(**bound)
    return logger
