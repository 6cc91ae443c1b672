"""Strict parsing rules shared by the FTPS and SFTP policies."""

from __future__ import annotations

import pytest

from airflow_secure_transfer.exceptions import ConfigurationError, SecurityPolicyError
from airflow_secure_transfer.security.policy import parse_bool, parse_ftps_settings, parse_sftp_settings

PIN = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


@pytest.mark.parametrize(("raw", "expected"), [(True, True), ("false", False), ("FALSE", False), ("yes", True),
                                               (0, False), ("", None), (None, None)])
def test_parse_bool(raw: object, expected: bool | None) -> None:
    assert parse_bool("k", raw) is expected


@pytest.mark.parametrize("raw", ["yes?", "2", 2, "truthy", [], {}])
def test_parse_bool_refuses_anything_else(raw: object) -> None:
    with pytest.raises(ConfigurationError, match="must be true or false"):
        parse_bool("k", raw)


def test_uri_string_values_are_converted() -> None:
    s = parse_ftps_settings(conn_type="secure_ftps", host="h", extras={"conn_timeout": "12.5",
                                                                       "max_connections": "8"})
    assert s.conn_timeout == 12.5 and s.max_connections == 8


@pytest.mark.parametrize(
    ("extras", "match"),
    [
        ({"conn_timeout": "soon"}, "must be a number"),
        ({"conn_timeout": 0}, "between"),
        ({"max_connections": 2.5}, "whole number"),
        ({"max_connections": 1000}, "between"),
        ({"max_connections": True}, "must be a number"),
    ],
)
def test_malformed_numbers(extras: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        parse_ftps_settings(conn_type="secure_ftps", host="h", extras=extras)


@pytest.mark.parametrize("conn_type", ["http", "ftps", "", None, "fs"])
def test_wrong_connection_types_name_the_accepted_ones(conn_type: str | None) -> None:
    with pytest.raises(ConfigurationError, match="accepted types: secure_ftps, ftp"):
        parse_ftps_settings(conn_type=conn_type, host="h")
    with pytest.raises(ConfigurationError, match="accepted types: secure_sftp, sftp, ssh"):
        parse_sftp_settings(conn_type=conn_type, host="h", extras={"host_key": PIN})


@pytest.mark.parametrize("host", ["", None, "ftp://h", "h/x", "a b"])
def test_bad_hosts(host: str | None) -> None:
    with pytest.raises(ConfigurationError, match="host"):
        parse_ftps_settings(conn_type="secure_ftps", host=host)


def test_empty_values_mean_unset_as_the_ui_stores_them() -> None:
    s = parse_ftps_settings(conn_type="secure_ftps", host="h", extras={k: None for k in (
        "tls_mode", "ca_bundle", "cert_fingerprint", "min_tls_version", "conn_timeout")} | {"remote_root": ""})
    assert s.tls_mode.value == "explicit" and s.port == 21 and s.conn_timeout == 30


def test_secrets_are_not_in_repr() -> None:
    s = parse_ftps_settings(conn_type="secure_ftps", host="h", login="u", password="hunter2-secret")
    t = parse_sftp_settings(conn_type="sftp", host="h", login="u", password="hunter2-secret",
                            extras={"host_key": PIN, "private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nsecretkey\n",
                                    "private_key_passphrase": "passphrase-secret"})
    for text in (repr(s), str(s), repr(t), str(t)):
        assert "hunter2" not in text and "secretkey" not in text and "passphrase-secret" not in text


def test_policy_error_is_a_configuration_error_and_not_retryable() -> None:
    with pytest.raises(SecurityPolicyError) as info:
        parse_ftps_settings(conn_type="ftp", host="h", extras={"verify": False})
    assert isinstance(info.value, ConfigurationError)
    assert info.value.retryable is False
    assert "cert_fingerprint" in str(info.value) and "ca_bundle" in str(info.value)


def test_a_malformed_client_key_is_not_repeated_in_the_error() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_ftps_settings(
            conn_type="secure_ftps",
            host="h",
            extras={"client_cert": "-----BEGIN CERTIFICATE-----\nx\n", "client_key": "MIIEsecretkeybits"},
        )
    assert "MIIEsecretkeybits" not in str(info.value)
    assert "client_key" in str(info.value)
