"""Page objects for Airflow 3.3's connection list and "Add Connection" dialog (Playwright, sync API).

Locators follow what a person sees: roles and accessible names ("Admin" -> "Connections", "Add Connection",
textbox "Host", the row's "Test Connection" icon). Extra fields that have no accessible name (multiline
textareas, plain text inputs of ``conn-fields``) are found by the form's ``name=element_<extra key>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import FloatRect, Locator, Page

TEST_TOAST = re.compile(r"^Test Connection (Successful|Failed)")


@dataclass(frozen=True)
class TestOutcome:
    """What the Test button reported: the toast as shown, and the API answer behind it."""

    __test__ = False  # not a pytest test class

    ok: bool
    title: str
    #: The toast's text below its title (the hook's message as the user reads it).
    toast_message: str
    #: ``message`` of ``POST /api/v2/connections/test``.
    api_message: str


class ConnectionForm:
    """The open "Add Connection" dialog."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.dialog = page.get_by_role("dialog")

    def choose_type(self, label: str, *, ready_field: str = "Host") -> None:
        """Pick a connection type by its display name ("Secure FTPS").

        :param ready_field: a standard text field the chosen type shows (its appearance means the type's
            metadata was applied); "Host" unless the type hides it.
        """
        self.dialog.get_by_role("combobox", name="Connection Type").click()
        self.page.get_by_role("option", name=label, exact=True).click()
        # The standard fields of the chosen type appear once the type's metadata is applied.
        self.dialog.get_by_role("textbox", name=ready_field).wait_for()

    def fill_standard(
        self, *, host: str, port: int, login: str, password: str | None, login_label: str = "Username"
    ) -> None:
        """Fill the "Standard Fields" section (opened if needed); ``password=None`` leaves it empty."""
        self._open_section("Standard Fields")
        self.dialog.get_by_role("textbox", name="Host").fill(host)
        self.dialog.get_by_role("spinbutton", name="Port").fill(str(port))
        self.dialog.get_by_role("textbox", name=login_label, exact=True).fill(login)
        if password is not None:
            self.dialog.get_by_role("textbox", name="Password", exact=True).fill(password)

    def open_extra(self) -> Locator:
        """Open the "Extra Fields" section (our ``conn-fields``) and return it."""
        self._open_section("Extra Fields")
        region = self.dialog.get_by_role("region").filter(has=self.page.locator("[name^=element_]"))
        region.first.wait_for()
        return region.first

    def _open_section(self, name: str) -> None:
        button = self.dialog.get_by_role("button", name=name, exact=True)
        if button.get_attribute("aria-expanded") != "true":
            button.click()

    def extra_input(self, key: str) -> Locator:
        """The input of extra ``key`` (``element_<key>``: a textarea, an input or a select's hidden input)."""
        return self.dialog.locator(f"[name=element_{key}]").first

    def extra_group(self, key: str) -> Locator:
        """The form row of extra ``key``: its label, its input and its description."""
        return self.dialog.get_by_role("group").filter(has=self.page.locator(f"[name=element_{key}]")).last

    def fill_extra(self, key: str, value: str) -> None:
        """Type ``value`` into extra ``key`` the way a paste does (a single-line input turns newlines into spaces)."""
        field = self.extra_input(key)
        field.fill(value)
        # Show a pasted PEM from its first line, and drop the focus ring, as after a person's paste and Tab.
        field.evaluate("el => { el.scrollTop = 0; el.blur(); }")

    def standard_input(self, name: str) -> Locator:
        return self.dialog.get_by_role("textbox", name=name, exact=True)

    def screenshot(self, path: Path, *, until_key: str | None = None) -> None:
        """Screenshot the whole dialog, or its top down to (not including) the row of extra ``until_key``.

        The viewport is grown for the shot so nothing below the fold is cut off.
        """
        viewport = self.page.viewport_size or {"width": 1280, "height": 900}
        height = int(self.page.evaluate("() => document.querySelector('[role=dialog]').scrollHeight"))
        self.page.set_viewport_size({"width": viewport["width"], "height": max(viewport["height"], height + 160)})
        try:
            if until_key is None:
                self.dialog.screenshot(path=path)
            else:
                box = self.dialog.bounding_box()
                stop = self.extra_group(until_key).bounding_box()
                assert box is not None and stop is not None, "dialog or field not visible"
                clip: FloatRect = {"x": box["x"], "y": box["y"], "width": box["width"], "height": stop["y"] - box["y"]}
                wait_for_animations(self.page)
                self.page.screenshot(path=path, clip=clip)
        finally:
            self.page.set_viewport_size(viewport)

    def save(self, conn_id: str) -> None:
        """Press Save and wait until the connection is listed."""
        save = self.dialog.get_by_role("button", name="Save")
        assert save.is_enabled(), "Save is disabled: a required field is empty"
        save.click()
        self.dialog.wait_for(state="hidden")
        self.page.get_by_role("status").filter(has_text="Connection has been successfully created").wait_for()
        connection_row(self.page, conn_id).wait_for()


def open_connections(page: Page, *, via_menu: bool = False) -> None:
    """Show the connection list: Home -> Admin -> Connections as a person clicks it, or by its address.

    The menu path costs seconds (the Home dashboard renders first), so one scenario walks it and the others
    go straight to ``/connections``.
    """
    if via_menu:
        page.goto("/")
        page.get_by_role("button", name="Admin").click()
        page.get_by_role("menuitem", name="Connections").click()
    else:
        page.goto("/connections")
    page.get_by_role("button", name="Add Connection").wait_for()


def add_connection(
    page: Page, conn_id: str, type_label: str, *, via_menu: bool = False, ready_field: str = "Host"
) -> ConnectionForm:
    """Open the connection list, press "Add Connection", set the id and the type; return the open form."""
    open_connections(page, via_menu=via_menu)
    page.get_by_role("button", name="Add Connection").click()
    form = ConnectionForm(page)
    form.dialog.get_by_role("textbox", name="Connection ID").fill(conn_id)
    form.choose_type(type_label, ready_field=ready_field)
    return form


def connection_row(page: Page, conn_id: str) -> Locator:
    return page.get_by_role("row").filter(has=page.get_by_role("cell", name=conn_id, exact=True))


def wait_for_animations(page: Page) -> None:
    """Wait until the page's finite CSS animations (a toast sliding in) have finished."""
    page.evaluate(
        """() => Promise.all(document.getAnimations()
              .filter(a => a.effect && a.effect.getComputedTiming().iterations !== Infinity)
              .map(a => a.finished.catch(() => null)))"""
    )


def screenshot_page(page: Page, path: Path) -> None:
    """Screenshot the viewport once the toasts have settled (the context's viewport is tall enough for them)."""
    wait_for_animations(page)
    page.screenshot(path=path)


def press_test(page: Page, conn_id: str, *, timeout_ms: float = 90_000) -> TestOutcome:
    """Press the row's "Test Connection" icon; return the toast and the API answer behind it."""
    with page.expect_response(
        lambda r: r.url.endswith("/api/v2/connections/test") and r.request.method == "POST", timeout=timeout_ms
    ) as response_info:
        connection_row(page, conn_id).get_by_role("button", name="Test Connection").click()
    response = response_info.value
    assert response.status == 200, f"POST /api/v2/connections/test answered {response.status}: {response.text()}"
    body = response.json()
    toast = page.get_by_role("status").filter(has_text=TEST_TOAST).last
    toast.wait_for()
    text = toast.inner_text().strip()
    title, _, message = text.partition("\n")
    return TestOutcome(
        ok=bool(body["status"]),
        title=title.strip(),
        toast_message=" ".join(message.split()),
        api_message=str(body["message"]),
    )
