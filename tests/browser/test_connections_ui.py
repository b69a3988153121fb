"""The provider's connection types as a person meets them in the Airflow 3 UI, in headless Chromium.

Admin > Connections > Add Connection: the Bitel and IPPanel forms show our fields, labels and
placeholders and hide what the gateways do not use; an IPPanel connection saved through the form
reads back through the REST API; the row's Test button shows our hook's verdict.

Run: ``python -m pytest tests/browser -q -m browser`` (needs ``scripts/install-browser.sh``).
Screenshots land in ``.artifacts/``.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_p2psms.sandbox import DEFAULT_IPPANEL_KEY, DEFAULT_IPPANEL_SENDER, SandboxServer
from tests.browser.conftest import ARTIFACTS, ApiServer

pytestmark = pytest.mark.browser

WAIT_SECONDS = 20

FORMS: dict[str, dict[str, str]] = {
    "bitel": {
        "type_name": "Bitel SMS",
        "token_label": "API token",
        "token_placeholder": "Bitel JWT (panel > API)",
        "host_placeholder": "https://api.bitel.rest",
        "sender_label": "Gateway number (sender)",
        "sender_example": "10009909",
    },
    "ippanel": {
        "type_name": "IPPanel SMS",
        "token_label": "API key",
        "token_placeholder": "IPPanel API key (panel > Developers > Access Keys)",
        "host_placeholder": "https://edge.ippanel.com/v1",
        "sender_label": "Sender number (from_number)",
        "sender_example": "+983000505",
    },
}
COMMON_EXTRA_LABELS = ("Request timeout (seconds)", "Max retries", "Batch size", "Verify TLS certificates")
HOST_LABEL = "Base URL (optional)"
HIDDEN_FIELDS = ("schema", "port", "login")
DEFAULT_LABELS = ("Host", "Password", "Login", "Port", "Schema")

GOOD_CONN_ID = "p2psms_ui_ippanel"
BAD_CONN_ID = "p2psms_ui_ippanel_badkey"

# Airflow 3.3.1/3.3.2: the row's Test button posts ``port: Number(null)``, i.e. 0, for a connection
# without a port; the API then sees "a different destination" and, as the UI sends the masked
# password, answers 400 "Bad Request" before any hook runs (every port-less connection type, ours
# included). apache/airflow#73298 fixes it in the API by treating port 0 like a blank port. Where
# the bug is present, this shim does the same in the page, so the rest of the test still checks what
# our hook reports through the UI.
PORT_ZERO_SHIM = """
if (!window.__p2psmsPortShim) {
  window.__p2psmsPortShim = true;
  const fix = (url, body) => {
    if (typeof body !== "string" || !/\\/api\\/v2\\/connections\\/test$/.test(String(url).split("?")[0])) return body;
    try { const data = JSON.parse(body); if (data.port === 0) data.port = null; return JSON.stringify(data); }
    catch (error) { return body; }
  };
  const open = XMLHttpRequest.prototype.open;
  XMLHttpRequest.prototype.open = function (method, url) {
    this.__p2psmsUrl = url;
    return open.apply(this, arguments);
  };
  const send = XMLHttpRequest.prototype.send;
  XMLHttpRequest.prototype.send = function (body) { return send.call(this, fix(this.__p2psmsUrl, body)); };
  const originalFetch = window.fetch;
  window.fetch = function (input, init) {
    if (init && init.body) {
      const url = typeof input === "string" ? input : input.url;
      init = Object.assign({}, init, {body: fix(url, init.body)});
    }
    return originalFetch.call(this, input, init);
  };
}
"""

TOASTS_SCRIPT = """
const text = (root, part) => {
  const element = root.querySelector(`[data-part=${part}]`);
  return element ? element.innerText.trim() : "";
};
return Array.from(document.querySelectorAll("[data-scope=toast][data-part=root]")).map((root) => ({
  id: root.id, title: text(root, "title"), description: text(root, "description"),
}));
"""


class ConnectionsPage:
    """Admin > Connections of the Airflow 3 React UI, driven like a person would."""

    def __init__(self, driver: Any, server: ApiServer) -> None:
        self.driver = driver
        self.server = server
        self.port_shim = False

    def until(self, condition: Any, what: str, timeout: float = WAIT_SECONDS) -> Any:
        """``WebDriverWait.until``; on a timeout, a screenshot and the page's text explain what was there."""
        from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            return WebDriverWait(self.driver, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(
                condition
            )
        except TimeoutException:
            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / f"failure-{len(list(ARTIFACTS.glob('failure-*.png'))) + 1}.png"
            self.driver.save_screenshot(str(shot))
            text = " | ".join(self.driver.find_element(By.TAG_NAME, "body").text.split("\n"))[:1500]
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what} at {self.driver.current_url} "
                f"(screenshot {shot}); the page shows: {text}"
            ) from None

    # -------------------------------------------------------------- navigation

    def open_list(self) -> None:
        """Admin > Connections (``/connections``)."""
        from selenium.webdriver.common.by import By

        add = (By.XPATH, "//button[normalize-space()='Add Connection']")
        url = f"{self.server.url}/connections"
        self.driver.get(url)
        # The first visit logs in (all users are admins); Airflow 3.1 then lands on the home page
        # instead of the page asked for, so ask again.
        self.until(
            lambda driver: driver.find_elements(*add) or not driver.current_url.startswith(url),
            "the connections list or a redirect",
            timeout=45,
        )
        if not self.driver.current_url.startswith(url):
            self.driver.get(url)
        self.until(lambda driver: driver.find_element(*add).is_enabled(), "the Add Connection button")

    def open_add_form(self) -> Any:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec

        self.open_list()
        self.driver.find_element(By.XPATH, "//button[normalize-space()='Add Connection']").click()
        dialog = self.until(
            ec.visibility_of_element_located(
                (By.XPATH, "//*[@role='dialog'][.//h2[normalize-space()='Add Connection']]")
            ),
            "the Add Connection dialog",
        )
        self.settle(dialog)
        return dialog

    def choose_type(self, dialog: Any, type_name: str) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec

        selector = dialog.find_element(By.CSS_SELECTOR, "input[role=combobox]")
        self.until(lambda _: selector.is_displayed() and selector.is_enabled(), "the connection type selector")
        selector.send_keys(type_name)
        self.until(
            ec.element_to_be_clickable((By.XPATH, f"//*[@role='option'][normalize-space()='{type_name}']")),
            f"the option {type_name!r} of the connection type selector",
        ).click()
        # The type's form is there once its password field is (hidden fields are not rendered at all).
        self.until(lambda _: dialog.find_elements(By.NAME, "password"), f"the {type_name} form")
        self.settle(dialog)

    def open_extra_fields(self, dialog: Any) -> None:
        from selenium.webdriver.common.by import By

        trigger = dialog.find_element(By.XPATH, ".//button[normalize-space()='Extra Fields']")
        if trigger.get_attribute("aria-expanded") != "true":
            trigger.click()
        self.until(lambda _: dialog.find_element(By.NAME, "element_sender").is_displayed(), "the extra fields")
        self.settle(dialog)

    def settle(self, element: Any) -> None:
        """Wait until no animation runs in ``element`` (the accordion slides open and shut)."""
        script = "return arguments[0].getAnimations({subtree: true}).length === 0"
        self.until(lambda driver: driver.execute_script(script, element), "the form's animations to end")

    # -------------------------------------------------------------- reading the form

    @staticmethod
    def visible_labels(dialog: Any) -> list[str]:
        from selenium.webdriver.common.by import By

        labels = [label.text.replace("*", "").strip() for label in dialog.find_elements(By.TAG_NAME, "label")]
        return [text for text in labels if text]

    @staticmethod
    def field(dialog: Any, label: str) -> Any:
        """The form field (label, input, helper text) whose label reads ``label``."""
        from selenium.webdriver.common.by import By

        return dialog.find_element(
            By.XPATH, f".//*[@data-scope='field'][@data-part='root'][.//label[normalize-space()='{label}']]"
        )

    # -------------------------------------------------------------- actions

    def create_connection(self, conn_id: str, type_name: str, *, host: str, password: str, sender: str) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec

        dialog = self.open_add_form()
        dialog.find_element(By.NAME, "connection_id").send_keys(conn_id)
        self.choose_type(dialog, type_name)
        dialog.find_element(By.NAME, "host").send_keys(host)
        dialog.find_element(By.NAME, "password").send_keys(password)
        self.open_extra_fields(dialog)
        dialog.find_element(By.NAME, "element_sender").send_keys(sender)
        save = dialog.find_element(By.XPATH, ".//button[normalize-space()='Save']")
        self.until(lambda _: save.is_enabled(), "an enabled Save button")
        save.click()
        self.until(ec.staleness_of(dialog), f"the Add Connection dialog to close after saving {conn_id}")
        self.until(ec.visibility_of_element_located((By.XPATH, self.row_xpath(conn_id))), f"{conn_id} in the list")

    @staticmethod
    def row_xpath(conn_id: str) -> str:
        return f"//tr[td[normalize-space()='{conn_id}']]"

    def toasts(self) -> list[dict[str, str]]:
        """
        The toasts on screen, as id, title and description, read in one script run: toasts close on their own,
        so reading them element by element can meet one that is already gone.
        """
        return self.driver.execute_script(TOASTS_SCRIPT)

    def click(self, element: Any, attempts: int = 5) -> None:
        """
        Click like a user: if a tooltip left open by an earlier hover covers the element, move the pointer
        off it, close the tooltip with Escape, and click again.
        """
        from selenium.common.exceptions import ElementClickInterceptedException
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        for attempt in range(attempts):
            try:
                element.click()
                return
            except ElementClickInterceptedException:
                if attempt == attempts - 1:
                    raise
                # To the page's top-left corner (offsets count from the element's centre).
                body = self.driver.find_element(By.TAG_NAME, "body")
                corner = (-body.size["width"] // 2 + 2, -body.size["height"] // 2 + 2)
                ActionChains(self.driver).move_to_element_with_offset(body, *corner).send_keys(Keys.ESCAPE).perform()
                time.sleep(0.3)

    def click_test(self, conn_id: str) -> tuple[str, str]:
        """Click the row's Test button; returns the title and the message of the toast it raises."""
        from selenium.webdriver.common.by import By

        if self.port_shim:
            self.driver.execute_script(PORT_ZERO_SHIM)
        seen = {toast["id"] for toast in self.toasts()}
        row = self.driver.find_element(By.XPATH, self.row_xpath(conn_id))
        self.click(row.find_element(By.CSS_SELECTOR, "button[aria-label='Test Connection']"))

        def new_toast(_: Any) -> Any:
            fresh = [toast for toast in self.toasts() if toast["id"] not in seen and toast["title"]]
            return fresh[0] if fresh else False

        toast = self.until(new_toast, f"the toast of the Test button of {conn_id}", timeout=45)
        return toast["title"], toast["description"]


@pytest.fixture(scope="module")
def page(browser: Any, api_server: ApiServer) -> ConnectionsPage:
    return ConnectionsPage(browser, api_server)


@pytest.mark.parametrize("conn_type", ["bitel", "ippanel"])
def test_add_connection_form(page: ConnectionsPage, artifacts: Path, conn_type: str) -> None:
    from selenium.webdriver.common.by import By

    expected = FORMS[conn_type]
    form = expected["type_name"]
    dialog = page.open_add_form()
    page.choose_type(dialog, form)

    # Standard fields: relabelled, with placeholders; what the gateways do not use is not there.
    page.driver.save_screenshot(str(artifacts / f"connection-form-{conn_type}-standard.png"))
    labels = page.visible_labels(dialog)
    for label in (HOST_LABEL, expected["token_label"]):
        assert label in labels, f"label {label!r} missing from the {form} form: {labels}"
    for label in DEFAULT_LABELS:
        assert label not in labels, f"Airflow's default label {label!r} shown on the {form} form: {labels}"
    for name in HIDDEN_FIELDS:
        assert not dialog.find_elements(By.NAME, name), f"hidden field {name!r} shown on the {form} form"
    host = page.field(dialog, HOST_LABEL).find_element(By.NAME, "host")
    assert host.is_displayed()
    assert host.get_attribute("placeholder") == expected["host_placeholder"]
    password = page.field(dialog, expected["token_label"]).find_element(By.NAME, "password")
    assert password.is_displayed()
    assert password.get_attribute("type") == "password"
    assert password.get_attribute("placeholder") == expected["token_placeholder"]

    # Extra fields: ours, with their labels.
    page.open_extra_fields(dialog)
    page.driver.save_screenshot(str(artifacts / f"connection-form-{conn_type}-extra.png"))
    labels = page.visible_labels(dialog)
    for label in (expected["sender_label"], *COMMON_EXTRA_LABELS):
        assert label in labels, f"label {label!r} missing from the {form} form: {labels}"
        assert page.field(dialog, label).find_elements(By.TAG_NAME, "input"), f"no input under {label!r}"

    # The sender's example must reach the user: as a placeholder, a suggestion or the help text.
    sender_field = page.field(dialog, expected["sender_label"])
    sender = sender_field.find_element(By.NAME, "element_sender")
    assert sender.is_displayed()
    placeholder = sender.get_attribute("placeholder") or ""
    help_text = " ".join(
        helper.text for helper in sender_field.find_elements(By.CSS_SELECTOR, "[data-part=helper-text]")
    )
    suggestions = [
        option.get_attribute("value") or ""
        for option in dialog.find_elements(By.CSS_SELECTOR, f"datalist[id='{sender.get_attribute('list')}'] option")
    ]
    example = expected["sender_example"]
    assert any(example in text for text in (placeholder, help_text, *suggestions)), (
        f"the {form} form never shows the sender example {example!r} "
        f"(placeholder {placeholder!r}, suggestions {suggestions}, help {help_text!r})"
    )


def _airflow_rejects_portless_test(server: ApiServer, conn_id: str, conn: dict[str, Any]) -> bool:
    """Whether this Airflow has the port-0 Test-button bug (see ``PORT_ZERO_SHIM``)."""
    body = {
        "connection_id": conn_id,
        "conn_type": conn["conn_type"],
        "host": conn["host"],
        "extra": conn["extra"],
        "password": "***",
        "login": "",
        "schema": "",
        "description": "",
    }
    status_zero, answer_zero = server.call("POST", "/api/v2/connections/test", {**body, "port": 0})
    status_none, _ = server.call("POST", "/api/v2/connections/test", {**body, "port": None})
    detail = str((answer_zero or {}).get("detail", "")) if isinstance(answer_zero, dict) else ""
    return status_zero == 400 and "host or port to test differs" in detail and status_none == 200


def test_ippanel_connection_saved_and_tested(page: ConnectionsPage, artifacts: Path) -> None:
    with SandboxServer() as sandbox:
        page.create_connection(
            GOOD_CONN_ID,
            "IPPanel SMS",
            host=sandbox.ippanel_url,
            password=DEFAULT_IPPANEL_KEY,
            sender=DEFAULT_IPPANEL_SENDER,
        )
        page.create_connection(
            BAD_CONN_ID, "IPPanel SMS", host=sandbox.ippanel_url, password="not-the-key", sender=DEFAULT_IPPANEL_SENDER
        )

        status, conn = page.server.call("GET", f"/api/v2/connections/{GOOD_CONN_ID}")
        assert status == 200, conn
        assert conn["conn_type"] == "ippanel"
        assert conn["host"] == sandbox.ippanel_url
        assert json.loads(conn["extra"])["sender"] == DEFAULT_IPPANEL_SENDER
        assert conn["login"] in (None, "") and conn["port"] is None and conn["schema"] in (None, "")

        title, message = page.click_test(GOOD_CONN_ID)
        if title == "Test Connection Failed" and _airflow_rejects_portless_test(page.server, GOOD_CONN_ID, conn):
            warnings.warn(
                f"This Airflow's Test button fails for every connection without a port (UI toast: {title}: "
                f"{message}); apache/airflow#73298 fixes it. Testing our hook with that fix applied in the page.",
                UserWarning,
                stacklevel=1,
            )
            page.port_shim = True
            title, message = page.click_test(GOOD_CONN_ID)
        page.driver.save_screenshot(str(artifacts / "connection-test-success.png"))
        assert title == "Test Connection Successful", f"{title}: {message}"
        assert "accepted the API key" in message, message

        title, message = page.click_test(BAD_CONN_ID)
        page.driver.save_screenshot(str(artifacts / "connection-test-failure.png"))
        assert title == "Test Connection Failed", f"{title}: {message}"
        assert "refused" in message, message
