"""Prefect retry conditions: retry a task only for the failures that a retry can cure."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def retry_only_on(error: type[BaseException]) -> Callable[[Any, Any, Any], bool]:
    """A ``retry_condition_fn`` that retries when the task raised ``error`` (a device that dropped
    out) and never otherwise: bad input fails the same way every time."""

    def condition(task: Any, task_run: Any, state: Any) -> bool:
        try:
            state.result()
        except error:
            return True
        except Exception:  # noqa: BLE001 - any other failure is not worth retrying
            return False
        return False

    return condition
