"""Fixtures for ``pytest e2e``: one deployment per pytest session, Airflow's REST API, Temporal, a browser.

Under pytest-xdist every worker is its own session; all e2e tests carry the ``xdist_group("e2e")`` mark so
that ``--dist loadgroup`` runs them on one worker against one deployment (other ``--dist`` modes start
one deployment per worker: free ports and separate work directories keep them apart).
"""

from __future__ import annotations

import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from e2e_chromium import ChromiumMissing, ensure_chromium
from playwright.sync_api import Browser, Page, sync_playwright

from e2e_harness import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, E2E_DAG_IDS, Deployment, eventually, safe_name, screenshot
from e2e_stack import choose_mode, create_stack
from temporal_airflow.cli.airflow_rest import AirflowRest

E2E_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if E2E_DIR in item.path.parents:
            item.add_marker(pytest.mark.xdist_group("e2e"))
    # The compose stack's test first, before the session's deployment starts: one stack at a time.
    items.sort(key=lambda item: item.path.name != "test_e2e_compose.py")


def pytest_sessionstart(session: pytest.Session) -> None:
    """SIGTERM stops the suite as Ctrl-C does, so the deployment's teardown removes what it started."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def deployment() -> Iterator[Deployment]:
    workdir = Path(tempfile.mkdtemp(prefix="temporal-airflow-e2e-"))
    stack = create_stack(choose_mode(), workdir)
    try:
        try:
            endpoints = stack.start()
            api = AirflowRest(endpoints.api_url)
            eventually(
                lambda: {dag["dag_id"] for dag in api.request("GET", "dags?limit=100")["dags"]} >= E2E_DAG_IDS,
                300,
                "the e2e DAGs to be parsed",
                interval=2,
            )
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: stop the suite (the finally below cleans up)
            raise
        except BaseException as error:
            raise RuntimeError(f"the e2e stack did not start: {error}\n{stack.diagnostics()}") from error
        yield Deployment(endpoints, stack, api)
    finally:
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(autouse=True)
def _stack_logs_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """A failing e2e test leaves every component's log tail next to its screenshots."""
    yield
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed and "deployment" in request.fixturenames:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        diagnostics = request.getfixturevalue("deployment").stack.diagnostics()
        (ARTIFACTS / f"{safe_name(request.node.name)}.logs.txt").write_text(diagnostics)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    try:
        chromium = ensure_chromium(CHROMIUM)
    except ChromiumMissing as missing:
        pytest.fail(str(missing))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        screenshot(page, f"{request.node.name}.failure")
    context.close()
