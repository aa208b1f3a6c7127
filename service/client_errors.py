"""Client errors in the log: once, at INFO, without what the client sent.

A request the client got wrong is not a server fault: it is answered with its status and
counted in `leanserve_requests_total{code}`. The log gets one short line naming the route,
the status and the error class; never the message, which may quote the request. BentoML logs
its own validation failures of native endpoints at ERROR with a traceback that includes the
client's values; `BentoClientErrorFilter` rewrites those records the same way.
"""

from __future__ import annotations

import logging

from service.errors import ServingError

logger = logging.getLogger("leanserve.client_errors")
# The logger BentoML's `log_exception` writes to for failed native API calls.
BENTOML_API_LOGGER = "bentoml._internal.server.http_app"


def log_client_error(protocol: str, route: str, exc: ServingError) -> None:
    """One INFO line for an error the client caused (status < 500); server faults are logged elsewhere."""
    if exc.http_status < 500:
        logger.info("%s %s answered %d (%s)", protocol, route, exc.http_status, type(exc).__name__)


def _client_status(exc: BaseException | None) -> int | None:
    """The status of an exception caused by the client, or None for anything else."""
    if exc is None:
        return None
    from bentoml.exceptions import BentoMLException
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        return 400
    if isinstance(exc, ServingError):
        status = exc.http_status
    elif isinstance(exc, BentoMLException):
        status = int(exc.error_code)
    else:
        return None
    return status if status < 500 else None


class BentoClientErrorFilter(logging.Filter):
    """Turns BentoML's ERROR-with-traceback record of a client error into one payload-free INFO line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        status = _client_status(exc)
        if status is None:
            return True
        route = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.msg, record.args = "rest %s answered %d (%s)", (route, status, type(exc).__name__)
        record.exc_info, record.exc_text = None, None
        return True


# BentoML's server logging passes WARNING and above from loggers other than its own; the
# service's lines at INFO (client errors, loads, promotions, re-optimisations) are meant to be read.
INFO_LOGGERS = ("leanserve", "service", "monitoring")


def configure_worker_logging() -> None:
    """In a server worker: BentoML's client-error records rewritten (see the module), and the
    service's own INFO lines let through."""
    logging.getLogger(BENTOML_API_LOGGER).addFilter(BentoClientErrorFilter())
    for name in INFO_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
