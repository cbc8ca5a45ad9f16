"""Headless Debian chromium under Selenium, through the system chromedriver.

The driver's path is given, so Selenium Manager never runs (it would try the
network to find or download a driver or a browser); ``SE_OFFLINE`` says the
same to it should a Selenium version call it anyway.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import NoSuchWindowException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.procs import ROOT

ARTIFACTS = ROOT / "test-artifacts" / "browser"
WAIT = 20.0


def open_browser(width: int = 1280, height: int = 800) -> WebDriver:
    chromium = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    assert chromium and driver, "chromium and chromium-driver are needed: run `make install`"
    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


_ASYNC = """
const done = arguments[arguments.length - 1];
(async function () { %s }).apply(null, Array.prototype.slice.call(arguments, 0, -1)).then(
  (value) => done({ ok: value === undefined ? null : value }),
  (err) => done({ error: String((err && err.stack) || err) }),
);
"""


@dataclass
class Window:
    """One browser window of the shared session."""

    driver: WebDriver
    handle: str

    def focus(self) -> None:
        try:
            if self.driver.current_window_handle == self.handle:
                return
        except NoSuchWindowException:  # the current one was just closed
            pass
        self.driver.switch_to.window(self.handle)

    def js(self, script: str, *args: Any) -> Any:
        self.focus()
        return self.driver.execute_script(script, *args)

    def js_async(self, body: str, *args: Any) -> Any:
        """Run ``body`` as an async function (``arguments`` are ``args``); its result."""
        self.focus()
        self.driver.set_script_timeout(WAIT)
        result = self.driver.execute_async_script(_ASYNC % body, *args)
        assert "error" not in result, result["error"]
        return result["ok"]

    def wait(self, condition: Callable[[WebDriver], Any], what: str = "the page") -> None:
        self.focus()
        try:
            WebDriverWait(self.driver, WAIT, poll_frequency=0.05).until(
                lambda d: (self.focus(), condition(d))[1]
            )
        except Exception:
            self.screenshot("failed-" + "".join(c if c.isalnum() else "-" for c in what)[:60])
            logs = self.driver.execute_script("return document.body.innerText")
            raise AssertionError(f"timed out waiting for {what}; page text:\n{logs}") from None

    def screenshot(self, name: str) -> None:
        self.focus()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))
