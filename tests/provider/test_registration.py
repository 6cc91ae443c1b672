"""The package registers itself with Airflow: providers manager, CLI and UI metadata."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import airflow_secure_transfer
from airflow_secure_transfer import DISTRIBUTION_NAME, get_provider_info

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


def test_providers_manager_sees_both_connection_types_with_their_fields() -> None:
    from airflow.providers_manager import ProvidersManager

    pm = ProvidersManager()
    assert DISTRIBUTION_NAME in pm.providers
    assert pm.providers[DISTRIBUTION_NAME].version == airflow_secure_transfer.__version__
    widgets = pm.connection_form_widgets
    behaviours = pm.field_behaviours
    for conn_type, fields, hook_name in (
        ("secure_ftps", FTPS_FIELDS, "Secure FTPS"),
        ("secure_sftp", SFTP_FIELDS, "Secure SFTP"),
    ):
        declared = {
            w.field_name for key, w in widgets.items() if key.startswith(f"extra__{conn_type}__")
        }
        assert declared == fields
        sensitive = {
            w.field_name for key, w in widgets.items() if key.startswith(f"extra__{conn_type}__") and w.is_sensitive
        }
        assert sensitive == SENSITIVE[conn_type]
        assert behaviours[conn_type]["hidden_fields"] == ["schema"]
        assert pm._hook_name_dict[conn_type] == hook_name  # what the UI shows in the type list


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
