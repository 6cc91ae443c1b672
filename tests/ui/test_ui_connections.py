"""The Airflow UI, in a real browser: add Secure FTPS / Secure SFTP connections through the form, press Test.

Every scenario goes Admin -> Connections -> Add Connection, fills the form as a person would, saves, and
presses the row's "Test Connection" icon; the api-server then runs our hook's ``test_connection()`` against
the fixture server on loopback. Screenshots of each form and result land in ``test-artifacts/ui/``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_secure_transfer import FTPS_CONN_FIELDS, SFTP_CONN_FIELDS, get_provider_info
from tests.ui.connection_form import ConnectionForm, TestOutcome, add_connection, press_test, screenshot_page

if TYPE_CHECKING:
    from playwright.sync_api import Page

    from tests.servers import FTPSServer, SFTPServer

pytestmark = pytest.mark.ui

DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "secure-ftps-connection.png"


def _behaviour(conn_type: str) -> dict[str, Any]:
    for ct in get_provider_info()["connection-types"]:
        if ct["connection-type"] == conn_type:
            return dict(ct["ui-field-behaviour"])
    raise AssertionError(conn_type)


def _hex(text: str) -> str:
    """Lower-case text with colons removed, so a fingerprint printed as ab:cd:.. matches its plain hex."""
    return text.replace(":", "").lower()


def _ssh_sha256(key_line: str) -> str:
    """OpenSSH's ``SHA256:...`` fingerprint of a public key line."""
    blob = base64.b64decode(key_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _other_ed25519_key_line() -> str:
    """A freshly generated ed25519 public key: a well-formed pin that is not the server's."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    public = Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def _check_fields(form: ConnectionForm, fields: dict[str, dict[str, Any]]) -> None:
    """Every conn-field is in the "Extra Fields" section with its label, its description and the right widget."""
    form.open_extra()
    for key, spec in fields.items():
        group = form.extra_group(key)
        text = " ".join(group.inner_text().split())
        assert spec["label"] in text, f"{key}: label {spec['label']!r} not shown; row reads {text!r}"
        assert " ".join(spec["description"].split()) in text, f"{key}: description not shown; row reads {text!r}"
        schema = spec["schema"]
        tag = form.extra_input(key).evaluate("e => e.tagName.toLowerCase() + ':' + (e.type || '')")
        # Airflow 3.1's form (built from the hooks' classmethods) has neither multi-line nor masked extra
        # fields: both are one-line text inputs there (README, "Supported Airflow versions").
        if schema.get("format") == "multiline":
            expected = "textarea:textarea" if ui_reads_conn_fields() else "input:text"
            assert tag == expected, f"{key}: expected {expected}, got {tag}"
        elif schema.get("format") == "password":
            expected = "input:password" if ui_reads_conn_fields() else "input:text"
            assert tag == expected, f"{key}: expected {expected}, got {tag}"
        elif "enum" in schema:
            assert group.get_by_role("combobox").count() == 1, f"{key}: expected a select"
        if "default" in schema:
            # For a select, element_<key> is its hidden input, holding the chosen option's value.
            assert form.extra_input(key).input_value() == str(schema["default"]), f"{key}: default not prefilled"


def ui_reads_conn_fields() -> bool:
    """Whether the installed Airflow's UI builds forms from ``conn-fields`` (3.2+) rather than the hooks (3.1)."""
    import airflow.providers_manager

    return '"conn-fields"' in Path(airflow.providers_manager.__file__).read_text(encoding="utf-8")


def _check_standard(form: ConnectionForm, conn_type: str) -> None:
    """ui-field-behaviour: "schema" hidden, login relabelled, host placeholder shown."""
    behaviour = _behaviour(conn_type)
    assert "schema" in behaviour["hidden-fields"]
    assert form.dialog.get_by_role("textbox", name="Schema").count() == 0, "the hidden Schema field is shown"
    login_label = behaviour["relabeling"]["login"]
    assert form.standard_input(login_label).count() == 1, f"login not relabelled {login_label!r}"
    host = form.standard_input("Host")
    assert host.get_attribute("placeholder") == behaviour["placeholders"]["host"]


def _shoot_result(page: Page, path: Path, outcome: TestOutcome) -> None:
    screenshot_page(page, path)
    print(f"{path.name}: {outcome.title}: {outcome.toast_message}")


def _assert_toast_shows_api_message(outcome: TestOutcome) -> None:
    assert " ".join(outcome.api_message.split()) in outcome.toast_message, (
        f"the toast does not show the hook's message: toast {outcome.toast_message!r}, api {outcome.api_message!r}"
    )


# --------------------------------------------------------------------------- form rendering


def test_ftps_selects_never_show_null(ui_page: Page, ui_artifacts: Path) -> None:
    """Every select of the FTPS form shows a readable choice or the placeholder, never the word "null".

    Checked with the defaults, and again after each select is cleared with its "x" (the value is then null).
    """
    enums = [key for key, spec in FTPS_CONN_FIELDS.items() if "enum" in spec["schema"]]
    assert enums, "the FTPS form has no select: this test checks nothing"
    form = add_connection(ui_page, "render_secure_ftps", "Secure FTPS")
    form.open_extra()
    form.screenshot(ui_artifacts / "ftps-form-defaults.png")

    def shown() -> dict[str, str]:
        # The select's container (id element_<key>) shows the chosen option's label, or the placeholder.
        return {key: form.dialog.locator(f"#element_{key}").inner_text().strip() for key in enums}

    defaults = shown()
    for key in enums:
        clear = form.dialog.locator(f"#element_{key} [aria-label='Clear selected options']")
        if clear.count():
            clear.click()
    cleared = shown()
    form.screenshot(ui_artifacts / "ftps-form-selects-cleared.png")
    bad = {f"{k} ({when})": v for when, d in (("default", defaults), ("cleared", cleared)) for k, v in d.items()
           if v.strip().lower() in ("null", "none", "")}
    assert not bad, f"selects showing no readable value: {bad}"


# --------------------------------------------------------------------------- Secure FTPS


def test_ftps_add_and_test_succeeds(ui_page: Page, ui_artifacts: Path, pyftpd_explicit: FTPSServer) -> None:
    """Add a Secure FTPS connection trusting exactly the fixture's CA; Test reports TLS and the fingerprint."""
    server = pyftpd_explicit
    form = add_connection(ui_page, "partner_ftps", "Secure FTPS", via_menu=True)
    _check_standard(form, "secure_ftps")
    form.fill_standard(host=server.host, port=server.port, login=server.login, password=server.password)
    form.screenshot(ui_artifacts / "ftps-form-standard.png")

    _check_fields(form, FTPS_CONN_FIELDS)
    assert form.extra_input("tls_mode").input_value() == "explicit", "TLS mode does not default to explicit"
    form.fill_extra("ca_bundle", server.ca_pem)
    form.screenshot(ui_artifacts / "ftps-form-extra.png")
    _docs_screenshot(form, ui_artifacts)
    form.save("partner_ftps")

    outcome = press_test(ui_page, "partner_ftps")
    _shoot_result(ui_page, ui_artifacts / "ftps-test-success.png", outcome)
    assert outcome.ok, outcome
    assert outcome.title == "Test Connection Successful"
    _assert_toast_shows_api_message(outcome)
    assert re.search(r"TLSv1\.[23]", outcome.toast_message), f"no TLS version in {outcome.toast_message!r}"
    assert server.cert_fingerprint.lower() in _hex(outcome.toast_message), (
        f"the certificate fingerprint is not in {outcome.toast_message!r}"
    )


def test_ftps_wrong_fingerprint_fails_naming_the_mismatch(
    ui_page: Page, ui_artifacts: Path, pyftpd_explicit: FTPSServer
) -> None:
    """A pinned fingerprint that is not the server's: the toast names the mismatch and both fingerprints."""
    server = pyftpd_explicit
    wrong = hashlib.sha256(b"not the partner's certificate").hexdigest()
    wrong_display = ":".join(wrong[i : i + 2] for i in range(0, 64, 2)).upper()  # as a browser shows it
    form = add_connection(ui_page, "partner_ftps_wrong_pin", "Secure FTPS")
    form.fill_standard(host=server.host, port=server.port, login=server.login, password=server.password)
    form.open_extra()
    form.fill_extra("cert_fingerprint", wrong_display)
    form.screenshot(ui_artifacts / "ftps-wrong-fingerprint-form.png")
    form.save("partner_ftps_wrong_pin")

    outcome = press_test(ui_page, "partner_ftps_wrong_pin")
    _shoot_result(ui_page, ui_artifacts / "ftps-test-wrong-fingerprint.png", outcome)
    assert not outcome.ok, outcome
    assert outcome.title == "Test Connection Failed"
    _assert_toast_shows_api_message(outcome)
    message = outcome.toast_message
    assert "mismatch" in message.lower(), f"the failure does not name the mismatch: {message!r}"
    assert wrong in _hex(message), f"the expected (pinned) fingerprint is not named: {message!r}"
    assert server.cert_fingerprint.lower() in _hex(message), f"the presented fingerprint is not named: {message!r}"
    assert server.password not in message


# --------------------------------------------------------------------------- Secure SFTP


def test_sftp_add_and_test_succeeds(ui_page: Page, ui_artifacts: Path, asyncssh_server: SFTPServer) -> None:
    """Add a Secure SFTP connection with the fixture's host key pinned; Test succeeds and names the key."""
    server = asyncssh_server
    form = add_connection(ui_page, "partner_sftp", "Secure SFTP")
    _check_standard(form, "secure_sftp")
    form.fill_standard(host=server.host, port=server.port, login=server.login, password=server.password)
    form.screenshot(ui_artifacts / "sftp-form-standard.png")

    _check_fields(form, SFTP_CONN_FIELDS)
    form.fill_extra("host_key", server.host_key_line)
    form.screenshot(ui_artifacts / "sftp-form-extra.png")
    form.save("partner_sftp")

    outcome = press_test(ui_page, "partner_sftp")
    _shoot_result(ui_page, ui_artifacts / "sftp-test-success.png", outcome)
    assert outcome.ok, outcome
    assert outcome.title == "Test Connection Successful"
    _assert_toast_shows_api_message(outcome)
    assert _ssh_sha256(server.host_key_line) in outcome.toast_message, (
        f"the host key fingerprint is not in {outcome.toast_message!r}"
    )


def test_sftp_wrong_host_key_fails_naming_the_mismatch(
    ui_page: Page, ui_artifacts: Path, asyncssh_server: SFTPServer
) -> None:
    """A pinned host key that is not the server's: the toast says the host key does not match."""
    server = asyncssh_server
    wrong = _other_ed25519_key_line()
    form = add_connection(ui_page, "partner_sftp_wrong_key", "Secure SFTP")
    form.fill_standard(host=server.host, port=server.port, login=server.login, password=server.password)
    form.open_extra()
    form.fill_extra("host_key", wrong)
    form.screenshot(ui_artifacts / "sftp-wrong-host-key-form.png")
    form.save("partner_sftp_wrong_key")

    outcome = press_test(ui_page, "partner_sftp_wrong_key")
    _shoot_result(ui_page, ui_artifacts / "sftp-test-wrong-host-key.png", outcome)
    assert not outcome.ok, outcome
    assert outcome.title == "Test Connection Failed"
    _assert_toast_shows_api_message(outcome)
    message = outcome.toast_message
    assert re.search(r"host key", message, re.I), message
    assert _ssh_sha256(server.host_key_line) in message, f"the presented host key is not named: {message!r}"
    assert server.password not in message


def test_sftp_private_key_pasted_into_the_form_authenticates(
    ui_page: Page, ui_artifacts: Path, asyncssh_server: SFTPServer
) -> None:
    """A key pasted into "Private key (text)" logs in (no password set).

    That field is masked (``format: password``), i.e. a single-line ``<input>``: the browser turns the key's
    line breaks into spaces on paste, so the stored value is the key on one line. It must still work.
    """
    server = asyncssh_server
    form = add_connection(ui_page, "partner_sftp_key", "Secure SFTP")
    form.fill_standard(host=server.host, port=server.port, login=server.login, password=None)
    form.open_extra()
    form.fill_extra("host_key", server.host_key_line)
    form.fill_extra("private_key", server.client_key_text)
    stored = form.extra_input("private_key").input_value()
    assert "\n" not in stored and "-----BEGIN OPENSSH PRIVATE KEY-----" in stored  # what the browser keeps
    form.screenshot(ui_artifacts / "sftp-private-key-form.png")
    form.save("partner_sftp_key")

    outcome = press_test(ui_page, "partner_sftp_key")
    _shoot_result(ui_page, ui_artifacts / "sftp-test-private-key.png", outcome)
    assert outcome.ok, outcome
    assert (server.login, "publickey") in server.auth_log, f"no public-key login recorded: {server.auth_log}"
    assert "PRIVATE KEY" not in outcome.toast_message


# --------------------------------------------------------------------------- README screenshot


def _docs_screenshot(form: ConnectionForm, ui_artifacts: Path) -> None:
    """Shoot the README's picture (the dialog down to the certificate fingerprint) into the artifacts.

    It is copied to ``docs/img/`` only when ``SECURE_TRANSFER_UPDATE_DOCS_IMG=1``: every run has a fresh CA, so
    the picture changes each time and must not dirty the working tree by itself.
    """
    shot = ui_artifacts / DOCS_SCREENSHOT.name
    form.screenshot(shot, until_key="client_cert")
    size = shot.stat().st_size
    assert size < 150_000, f"the README screenshot is {size} bytes; keep it under 150 KB"
    if os.environ.get("SECURE_TRANSFER_UPDATE_DOCS_IMG") == "1":
        DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, DOCS_SCREENSHOT)
