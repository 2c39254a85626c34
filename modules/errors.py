"""A1111's `modules.errors`: how extensions report an error without stopping the program."""
from __future__ import annotations

import logging
import sys
import traceback

log = logging.getLogger("extensions")


def report(message: str, *, exc_info: bool = False) -> None:
    """Log `message`, with the exception being handled when `exc_info`."""
    log.error("%s", message, exc_info=exc_info)


def display(e: Exception, task: str, *, full_traceback: bool = False) -> None:
    log.error("%s: %s: %s", task, type(e).__name__, e, exc_info=full_traceback)


def display_once(e: Exception, task: str) -> None:
    if task in _already_displayed:
        return
    _already_displayed.add(task)
    display(e, task)


def print_error_explanation(message: str) -> None:
    print(message, file=sys.stderr)


def format_exception(e: BaseException, tb) -> list[list[str]]:
    return [["Traceback", "".join(traceback.format_exception(type(e), e, tb))]]


def run(code, task: str) -> None:
    try:
        code()
    except Exception as e:  # noqa: BLE001 - the point of this helper
        display(e, task)


_already_displayed: set[str] = set()
