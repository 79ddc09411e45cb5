"""What the tests read off Airflow's UI pages (React app of Airflow 3.3), through headless Chromium."""

from __future__ import annotations

import time
import urllib.parse

from playwright.sync_api import Locator, Page


def run_url(base: str, dag_id: str, run_id: str) -> str:
    return f"{base}/dags/{dag_id}/runs/{urllib.parse.quote(run_id, safe='')}"


def task_url(base: str, dag_id: str, run_id: str, task_id: str, tab: str = "") -> str:
    return f"{run_url(base, dag_id, run_id)}/tasks/{task_id}" + (f"/{tab}" if tab else "")


def task_row(page: Page, task_id: str) -> Locator:
    """The row of the run page's "Task Instances" table for ``task_id``."""
    return page.get_by_role("row").filter(has=page.get_by_role("link", name=task_id, exact=True))


def task_states(page: Page, task_ids: list[str]) -> dict[str, str]:
    """The state each task's row shows (``""`` when the row is not rendered yet)."""
    states = {}
    for task_id in task_ids:
        row = task_row(page, task_id)
        states[task_id] = row.inner_text() if row.count() else ""
    return states


def wait_for_text(page: Page, url: str, expected: dict[str, str], timeout: float = 120) -> None:
    """Load ``url`` until, for every task id in ``expected``, its row shows the given state label.

    Reloads rather than trusting the page's own auto-refresh, so the check sees what a user opening
    the page at that moment would see.
    """
    deadline = time.monotonic() + timeout
    seen: dict[str, str] = {}
    while time.monotonic() < deadline:
        page.goto(url)
        try:
            task_row(page, next(iter(expected))).first.wait_for(timeout=15_000)
        except Exception:
            continue
        seen = task_states(page, list(expected))
        if all(label in seen[task_id] for task_id, label in expected.items()):
            return
        time.sleep(2)
    raise AssertionError(f"the UI at {url} did not show {expected} within {timeout}s; last seen {seen}")


def grid_cells_with_state(page: Page, run_id: str, task_ids: list[str]) -> list[str]:
    """Tasks whose cell in the grid view's column for ``run_id`` carries a state badge."""
    return [
        task_id
        for task_id in task_ids
        if page.locator(f'[data-testid="grid-{run_id}-{task_id}"] [data-testid="task-state-badge"]').count()
    ]
