"""Alembic's set-up chatter at DEBUG: a start-up that migrates logs its migrations, not
Alembic's machinery ("setup plugin ...", "Context impl ...", "Will assume ...")."""

from __future__ import annotations

import logging

#: How Alembic's INFO messages about its own set-up begin.
_SET_UP = ("setup plugin ", "Context impl ", "Will assume ")
#: The loggers that send them.
_LOGGERS = ("alembic.runtime.plugins", "alembic.runtime.migration")


class _SetUpAtDebug(logging.Filter):
    """Turns Alembic's set-up messages into DEBUG records (dropped unless DEBUG is on)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not str(record.msg).startswith(_SET_UP):
            return True
        if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return False
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


_FILTER = _SetUpAtDebug()


def alembic_set_up_at_debug() -> None:
    """Install the filter on Alembic's loggers (once; before Alembic is imported, for the
    messages it logs on import)."""
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
