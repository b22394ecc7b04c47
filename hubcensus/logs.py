"""Logging of every command: text or JSON lines on stderr (HUBCENSUS_LOG_FORMAT), and no secret in any line."""

from __future__ import annotations

import logging
import os
import sys
import threading

# The secrets the logs must never show: HF_TOKEN from the start, and every token the settings resolve.
_SECRETS: set[str] = set()


def keep_out_of_logs(secret: str | None) -> None:
    """Have every later log line show `secret` as `***` (a short one is not a token: left alone)."""
    if secret and len(secret) >= 8:
        _SECRETS.add(secret)


def redact_secrets(record: logging.LogRecord) -> bool:
    """A log filter: the record's message with every known secret replaced by `***`; never drops a record."""
    secrets = [s for s in {*_SECRETS, os.environ.get("HF_TOKEN") or ""} if len(s) >= 8]
    if not secrets:
        return True
    message = record.getMessage()
    redacted = message
    for secret in secrets:
        redacted = redacted.replace(secret, "***")
    if redacted != message:
        record.msg, record.args = redacted, None
    return True


def configure_logging(log_format: str) -> None:
    """Text or JSON lines on stderr, through one root handler; the token is never written, even by mistake.

    Every logger goes through it: libraries' own handlers are removed (huggingface_hub adds one that writes
    plain text), warnings become log records, and an uncaught exception is logged with its traceback.
    """
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        from pythonjsonlogger.core import RESERVED_ATTRS
        from pythonjsonlogger.json import JsonFormatter

        # A traceback goes in the record's `exc_info` field, never on lines of its own; uvicorn's
        # `color_message` (the message again, with terminal colour codes) is left out.
        reserved = [*RESERVED_ATTRS, "color_message"]
        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s", reserved_attrs=reserved))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(redact_secrets)
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    for logger in logging.root.manager.loggerDict.values():
        if isinstance(logger, logging.Logger):
            logger.handlers.clear()
            logger.propagate = True
    logging.captureWarnings(True)
    if log_format == "json":
        threading.excepthook = _log_thread_exception
    # One line per HTTP request is noise on a terminal; warnings (retries, rate limits) still show. boto3 says
    # where it found the archive's credentials on every client: noise too (never the credentials themselves).
    for noisy in ("httpx", "httpx2", "botocore", "boto3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is not SystemExit and args.exc_value is not None:
        thread = args.thread.name if args.thread else "?"
        exc_info = (args.exc_type, args.exc_value, args.exc_traceback)
        logging.getLogger("hubcensus").error("unhandled error in thread %s", thread, exc_info=exc_info)
