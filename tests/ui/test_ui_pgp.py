"""The Airflow UI, in a real browser: add a "PGP keys" connection through the form and press Test.

The api-server runs ``SecurePGPHook.test_connection()``: it lists each key's fingerprint, user ids,
algorithms and expiry, and fails on an expired key. Screenshots land in ``test-artifacts/ui/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.pgp.conftest import ALICE_PASSPHRASE, PGPTestKeys, pgp_keys  # noqa: F401 - a fixture
from tests.ui.connection_form import add_connection, press_test, screenshot_page

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.ui

PASSPHRASE_LABEL = "Passphrase (of the private key)"
PORT_LABEL = "Port (not used: enter 0)"


def test_pgp_keys_add_and_test_lists_the_keys(
    ui_page: Page,
    ui_artifacts: Path,
    pgp_keys: PGPTestKeys,  # noqa: F811 - the imported fixture
) -> None:
    form = add_connection(ui_page, "partner_pgp", "PGP keys", ready_field=PASSPHRASE_LABEL)
    assert form.dialog.get_by_role("textbox", name="Host").count() == 0, "PGP keys has no host"
    form.dialog.get_by_role("textbox", name=PASSPHRASE_LABEL, exact=True).fill(ALICE_PASSPHRASE)
    form.dialog.get_by_role("spinbutton", name=PORT_LABEL).fill("0")  # Airflow 3.3's Test needs a stored port
    form.open_extra()
    form.fill_extra("public_keys", pgp_keys.public["bob"])
    form.fill_extra("private_key", pgp_keys.secret["alice"])  # masked: one line, breaks become spaces
    form.screenshot(ui_artifacts / "pgp-form.png")
    form.save("partner_pgp")

    outcome = press_test(ui_page, "partner_pgp")
    screenshot_page(ui_page, ui_artifacts / "pgp-test-success.png")
    assert outcome.ok, outcome
    assert outcome.title == "Test Connection Successful"
    message = outcome.toast_message
    for name in ("bob", "alice"):
        assert pgp_keys.fpr[name] in message, f"{name}'s fingerprint is not in {message!r}"
    assert "Bob Partner <bob@example.invalid>" in message and "RSA 3072" in message
    assert ALICE_PASSPHRASE not in message and "PRIVATE KEY" not in message


def test_pgp_keys_expired_key_fails(
    ui_page: Page,
    ui_artifacts: Path,
    pgp_keys: PGPTestKeys,  # noqa: F811 - the imported fixture
) -> None:
    form = add_connection(ui_page, "partner_pgp_expired", "PGP keys", ready_field=PASSPHRASE_LABEL)
    form.dialog.get_by_role("spinbutton", name=PORT_LABEL).fill("0")
    form.open_extra()
    form.fill_extra("public_keys", pgp_keys.public["expired"])
    form.save("partner_pgp_expired")

    outcome = press_test(ui_page, "partner_pgp_expired")
    screenshot_page(ui_page, ui_artifacts / "pgp-test-expired.png")
    assert not outcome.ok, outcome
    assert outcome.title == "Test Connection Failed"
    assert "expired on 2020-01-02" in outcome.toast_message and pgp_keys.fpr["expired"] in outcome.toast_message
