"""The package registers itself with Airflow: providers manager, CLI and UI metadata."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

import airflow_secure_transfer
from airflow_secure_transfer import DISTRIBUTION_NAME, FTPS_CONN_FIELDS, SFTP_CONN_FIELDS, get_provider_info
from airflow_secure_transfer.compat import form_field_kind
from airflow_secure_transfer.hooks.ftps import SecureFTPSHook
from airflow_secure_transfer.hooks.pgp import SecurePGPHook
from airflow_secure_transfer.hooks.sftp import SecureSFTPHook

pytestmark = pytest.mark.airflow

FTPS_FIELDS = {
    "tls_mode",
    "ca_bundle",
    "cert_fingerprint",
    "client_cert",
    "client_key",
    "min_tls_version",
    "max_tls_version",
    "conn_timeout",
    "encoding",
    "max_connections",
    "remote_root",
}
SFTP_FIELDS = {
    "host_key",
    "known_hosts",
    "key_file",
    "private_key",
    "private_key_passphrase",
    "conn_timeout",
    "max_connections",
    "remote_root",
}
SENSITIVE = {"secure_ftps": {"client_key"}, "secure_sftp": {"private_key", "private_key_passphrase"}}


def test_entry_point_targets_get_provider_info() -> None:
    eps = metadata.entry_points(group="apache_airflow_provider")
    ours = [ep for ep in eps if ep.dist is not None and ep.dist.name == DISTRIBUTION_NAME]
    assert len(ours) == 1
    assert ours[0].load() is get_provider_info
    assert get_provider_info()["package-name"] == DISTRIBUTION_NAME


def test_provider_info_matches_airflow_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    import airflow

    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_optional_fields_are_nullable_so_the_ui_does_not_require_them() -> None:
    # A non-nullable schema type makes the field required in the Airflow 3.2+ form.
    for conn in get_provider_info()["connection-types"]:
        for name, spec in conn["conn-fields"].items():
            assert "null" in spec["schema"]["type"], (conn["connection-type"], name)
            assert spec["label"] and spec["description"], (conn["connection-type"], name)


_UI_METADATA = """
import json, sys
from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService
from airflow.providers_manager import ProvidersManager
out = {m.connection_type: {"hook_name": m.hook_name, "extra_fields": m.extra_fields,
                           "standard_fields": m.standard_fields.model_dump() if m.standard_fields else None}
       for m in HookMetaService.hook_meta_data() if m.connection_type in ("secure_ftps", "secure_sftp", "secure_pgp")}
pm = ProvidersManager()
print(json.dumps({"forms": out, "behaviours": {k: pm.field_behaviours.get(k) for k in out},
                  "versions": {n: p.version for n, p in pm.providers.items()}}, default=str))
"""


@pytest.fixture(scope="module")
def ui_metadata(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What the installed Airflow's UI API serves for our connection types (in a fresh process)."""
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path_factory.mktemp("home")), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", _UI_METADATA], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_providers_manager_sees_both_connection_types_with_their_fields(ui_metadata: dict[str, Any]) -> None:
    # The UI's view on the installed minor: from conn-fields on 3.2+, from the hooks' classmethods on 3.1.
    assert ui_metadata["versions"][DISTRIBUTION_NAME] == airflow_secure_transfer.__version__
    for conn_type, fields, hook_name in (
        ("secure_ftps", FTPS_FIELDS, "Secure FTPS"),
        ("secure_sftp", SFTP_FIELDS, "Secure SFTP"),
    ):
        form = ui_metadata["forms"][conn_type]
        assert form["hook_name"] == hook_name  # what the UI shows in the type list
        extra = form["extra_fields"]
        assert set(extra) == fields
        sensitive = {name for name, field in extra.items() if field["schema"].get("format") == "password"}
        assert sensitive == SENSITIVE[conn_type]
        assert ui_metadata["behaviours"][conn_type]["hidden_fields"] == ["schema"]
        assert form["standard_fields"]["login"]["title"] == "Username"
        assert form["standard_fields"]["url_schema"]["hidden"] is True


def test_providers_manager_sees_the_pgp_keys_type(ui_metadata: dict[str, Any]) -> None:
    form = ui_metadata["forms"]["secure_pgp"]
    assert form["hook_name"] == "PGP keys"
    extra = form["extra_fields"]
    assert set(extra) == {"public_keys", "private_key", "public_keys_use"}
    assert {n for n, f in extra.items() if f["schema"].get("format") == "password"} == {"private_key"}
    assert ui_metadata["behaviours"]["secure_pgp"]["hidden_fields"] == ["host", "login", "schema"]
    assert form["standard_fields"]["password"]["title"] == "Passphrase (of the private key)"


def test_the_ui_form_shows_the_declared_labels_descriptions_and_defaults(ui_metadata: dict[str, Any]) -> None:
    for conn_type, declared in (("secure_ftps", FTPS_CONN_FIELDS), ("secure_sftp", SFTP_CONN_FIELDS)):
        extra = ui_metadata["forms"][conn_type]["extra_fields"]
        for name, spec in declared.items():
            assert extra[name]["schema"]["title"] == spec["label"], (conn_type, name)
            assert extra[name]["description"] == spec["description"], (conn_type, name)
            default = spec["schema"].get("default")
            assert extra[name]["value"] in (default, None if default is None else str(default)), (conn_type, name)


def _as_airflow_31_form(schema: dict[str, Any]) -> dict[str, Any]:
    """What Airflow 3.1's form can say of a conn-fields schema: its types, masking and choices."""
    kind = form_field_kind(schema)
    expected: dict[str, Any] = {"type": ["integer" if kind == "IntegerField" else "string", "null"]}
    if kind == "PasswordField":
        expected["format"] = "password"
    if "enum" in schema:
        expected["enum"] = [value for value in schema["enum"] if value is not None]  # 3.1 would show "null"
    return expected


def test_the_hooks_31_form_and_the_conn_fields_are_one_declaration(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hooks' classmethods (Airflow 3.1's form) equal the provider info (3.2+), field by field.

    The widgets are built with the stand-ins for wtforms and Flask-AppBuilder that Airflow's own
    API server uses to read hook forms (``HookMetaService``), so this runs on every minor.
    """
    from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService as Meta

    fake = {
        "wtforms": {
            "StringField": Meta.MockStringField,
            "IntegerField": Meta.MockIntegerField,
            "PasswordField": Meta.MockPasswordField,
        },
        "wtforms.validators": {"Optional": Meta.MockOptional, "any_of": Meta.MockEnum},
        "flask_babel": {"lazy_gettext": str},
        "flask_appbuilder": {},
        "flask_appbuilder.fieldwidgets": {
            "BS3TextFieldWidget": Meta.MockAnyWidget,
            "BS3TextAreaFieldWidget": Meta.MockAnyWidget,
            "BS3PasswordFieldWidget": Meta.MockAnyWidget,
        },
    }
    for name, attrs in fake.items():
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, module)

    info = {c["connection-type"]: c for c in get_provider_info()["connection-types"]}
    for hook in (SecureFTPSHook, SecureSFTPHook, SecurePGPHook):
        declared = info[hook.conn_type]
        assert hook.get_ui_field_behaviour() == {
            key.replace("-", "_"): value for key, value in declared["ui-field-behaviour"].items()
        }
        widgets = hook.get_connection_form_widgets()
        assert list(widgets) == list(declared["conn-fields"])
        for name, spec in declared["conn-fields"].items():
            param = widgets[name].param.dump()
            assert param["schema"] == {"title": spec["label"], **_as_airflow_31_form(spec["schema"])}, name
            assert param["description"] == spec["description"], name
            default = spec["schema"].get("default")
            if default is not None and form_field_kind(spec["schema"]) == "StringField":
                default = str(default)  # a number in 3.1's text input; the policy reads numeric strings
            assert param["value"] == default, name


def _airflow(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    }
    airflow_bin = Path(sys.executable).with_name("airflow")
    return subprocess.run([str(airflow_bin), *args], env=env, capture_output=True, text=True, timeout=300)


def test_airflow_providers_list_shows_the_provider(tmp_path: Path) -> None:
    result = _airflow("providers", "list", "--output", "json", home=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(result.stdout[result.stdout.index("[") :])
    ours = [row for row in rows if row["package_name"] == DISTRIBUTION_NAME]
    assert len(ours) == 1
    assert ours[0]["version"] == airflow_secure_transfer.__version__


def test_sensor_and_trigger_are_registered_with_the_providers_manager() -> None:
    info = get_provider_info()
    assert {m for s in info["sensors"] for m in s["python-modules"]} == {"airflow_secure_transfer.sensors.file"}
    assert {m for t in info["triggers"] for m in t["python-modules"]} == {"airflow_secure_transfer.triggers.file"}
    code = (
        "from airflow.providers_manager import ProvidersManager\n"
        "found = ProvidersManager().trigger\n"
        f"print(sorted({{t.trigger_class_name for t in found if t.package_name == {DISTRIBUTION_NAME!r}}}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "['airflow_secure_transfer.triggers.file']"
