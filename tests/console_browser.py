"""What the console's browser tests share: a real headless Chromium (Debian's chromium and chromium-driver, driven
by Selenium; no browser download), waiting for the page, logging in, and screenshots for docs/console.md.
The ``browser`` fixture (tests/conftest.py) opens one per test and fails the test if the page logged an error."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .servers import GatewayServer

__all__ = ["PASSWORD", "go_to", "log_in", "open_browser", "page_errors", "screenshot", "wait"]

PASSWORD = "console-test-password-1"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@contextlib.contextmanager
def open_browser() -> Iterator[Any]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no chromium and chromedriver on a CI run (.ci/run installs them with apt-get)")
        pytest.skip("no chromium and chromedriver (Debian: apt-get install chromium chromium-driver; .ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--lang=en-US"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    driver.set_window_size(1280, 900)
    try:
        yield driver
    finally:
        driver.quit()


def page_errors(driver: Any) -> list[dict[str, Any]]:
    """What the page logged at error level since the last call (the log is read once)."""
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def wait(predicate: Callable[[], Any], what: str, timeout: float = 10) -> Any:
    """``predicate()``'s first truthy value, polled every 0.1 s; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception:  # an element not there yet
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def screenshot(driver: Any, name: str) -> None:
    """With MODELROUTER_SCREENSHOTS=DIR (docs/console when the docs are refreshed), the page as a PNG there."""
    directory = os.environ.get("MODELROUTER_SCREENSHOTS")
    if directory:
        driver.save_screenshot(os.path.join(directory, f"{name}.png"))


def log_in(driver: Any, gw: GatewayServer, username: str = "ops", password: str = PASSWORD) -> None:
    """Open the console and submit the login form (not waiting for the answer)."""
    from selenium.webdriver.common.by import By

    driver.get(gw.url + "/console/")
    wait(lambda: driver.find_element(By.ID, "username").is_displayed(), "the login form")
    screenshot(driver, "login")
    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()


def go_to(driver: Any, page: str) -> None:
    """Log in first; then open the console page ``page`` (its navigation button) and wait for it."""
    from selenium.webdriver.common.by import By

    wait(lambda: driver.find_element(By.ID, "nav-" + page).is_displayed(), "the navigation")
    driver.find_element(By.ID, "nav-" + page).click()
    wait(lambda: driver.find_element(By.ID, page).is_displayed(), f"the {page} page")
