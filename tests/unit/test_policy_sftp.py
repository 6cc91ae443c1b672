"""parse_sftp_settings: what an SFTP connection may say (no server needed)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from airflow_secure_transfer.exceptions import ConfigurationError, SecurityPolicyError
from airflow_secure_transfer.security.policy import SFTPSettings, parse_sftp_settings

PIN = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
PIN2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGAxxuVgAR7s1Vf0VzBlNFazSWz5F+zmHhhi4/rGNLd+"
KEY_TEXT = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"


def parse(extras: dict[str, object] | None = None, **fields: object) -> SFTPSettings:
    args: dict[str, object] = {"conn_type": "secure_sftp", "host": "sftp.example", "extras": extras}
    args.update(fields)
    return parse_sftp_settings(**args)  # type: ignore[arg-type]


def test_minimal_pinned_connection_and_defaults() -> None:
    s = parse({"host_key": PIN})
    assert (s.host, s.port, s.login, s.password) == ("sftp.example", 22, None, None)
    assert s.host_keys == (PIN,)
    assert s.known_hosts is None
    assert s.conn_timeout == 30 and s.max_connections == 4 and s.remote_root is None
    assert s.compress is False  # the stock SSH hook compresses by default; we do not


def test_several_pins_one_per_line_with_comments_and_duplicates() -> None:
    s = parse({"host_key": f"# rotation\n{PIN} old-host\n\n{PIN2}\n{PIN}\n"})
    assert s.host_keys == (PIN, PIN2)


@pytest.mark.parametrize("conn_type", ["secure_sftp", "sftp", "ssh", "SFTP"])
def test_accepted_connection_types(conn_type: str) -> None:
    assert parse({"host_key": PIN}, conn_type=conn_type).conn_type == conn_type.lower()


@pytest.mark.parametrize(
    ("extras", "match"),
    [
        ({"host_key": PIN, "no_host_key_check": True}, "no_host_key_check"),
        ({"host_key": PIN, "no_host_key_check": "true"}, "no_host_key_check"),
        ({"host_key": PIN, "no_host_key_check": "on"}, "no_host_key_check"),
        ({"host_key": PIN, "allow_host_key_change": True}, "allow_host_key_change"),
        ({"host_key": PIN, "allow_host_key_change": "True"}, "allow_host_key_change"),
        ({}, "no 'host_key' and no 'known_hosts'"),
        ({"host_key": "", "known_hosts": None}, "no 'host_key' and no 'known_hosts'"),
        ({"host_key": "ssh-dss AAAAB3NzaC1kc3MAAACBAP"}, "DSA"),
    ],
)
def test_security_policy_refusals_say_how_to_pin(extras: dict[str, object], match: str) -> None:
    with pytest.raises(SecurityPolicyError, match=match) as err:
        parse(extras)
    assert "host_key" in str(err.value)
    assert not err.value.retryable


@pytest.mark.parametrize("value", [False, "false", "False", "0", "no", ""])
def test_safe_values_of_the_stock_switches_are_accepted(value: object) -> None:
    s = parse({"host_key": PIN, "no_host_key_check": value, "allow_host_key_change": value})
    assert s.host_keys == (PIN,)


@pytest.mark.parametrize("value", ["yes?", "2", "sometimes"])
def test_malformed_switch_values_are_errors_never_truthy(value: str) -> None:
    with pytest.raises(ConfigurationError, match="must be true or false"):
        parse({"host_key": PIN, "no_host_key_check": value})


@pytest.mark.parametrize(
    ("host_key", "match"),
    [
        ("ssh-ed25519", "must be '<key type> <base64 key>'"),
        ("ssh-foo AAAA", "unknown key type"),
        ("ssh-ed25519 !!!notbase64", "not valid base64"),
        ("ssh-rsa " + PIN.split()[1], "of type 'ssh-ed25519'"),
    ],
)
def test_malformed_pins(host_key: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        parse({"host_key": host_key})


def test_unknown_extra_is_an_error_naming_the_accepted_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown extra.*'ciphers'.*accepted extras: host_key"):
        parse({"host_key": PIN, "ciphers": ["aes128-cbc"]})


def test_known_hosts_text_or_file(tmp_path: Path) -> None:
    text = f"[sftp.example]:2222 {PIN}\n"
    s = parse({"known_hosts": text})
    assert s.known_hosts == text.strip() and s.known_hosts_source == "extra 'known_hosts'"
    path = tmp_path / "known_hosts"
    path.write_text(text)
    s = parse({"known_hosts": str(path)})
    assert s.known_hosts == text and s.known_hosts_source == str(path)


def test_missing_or_empty_known_hosts_file_fails_closed(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist; nothing would be trusted"):
        parse({"known_hosts": str(tmp_path / "missing")})
    empty = tmp_path / "empty"
    empty.write_text("# only a comment\n\n")
    with pytest.raises(ConfigurationError, match="is empty; nothing would be trusted"):
        parse({"known_hosts": str(empty)})


def test_client_key_options(tmp_path: Path) -> None:
    key_file = tmp_path / "id"
    key_file.write_text(KEY_TEXT)
    s = parse({"host_key": PIN, "key_file": str(key_file), "private_key_passphrase": "pp"})
    assert s.key_file == str(key_file) and s.private_key is None
    s = parse({"host_key": PIN, "private_key": KEY_TEXT.replace("\n", "\\n")})  # URI-style literal \n
    assert s.private_key == KEY_TEXT
    with pytest.raises(ConfigurationError, match="does not exist"):
        parse({"host_key": PIN, "key_file": str(tmp_path / "nope")})
    with pytest.raises(ConfigurationError, match="use 'key_file' for a path"):
        parse({"host_key": PIN, "private_key": str(key_file)})
    with pytest.raises(ConfigurationError, match="either extra 'key_file' or 'private_key'"):
        parse({"host_key": PIN, "key_file": str(key_file), "private_key": KEY_TEXT})


def test_timeouts_and_the_legacy_timeout_extra() -> None:
    assert parse({"host_key": PIN, "conn_timeout": "7.5"}).conn_timeout == 7.5
    assert parse({"host_key": PIN, "timeout": 9}).conn_timeout == 9
    assert parse({"host_key": PIN, "timeout": 9, "conn_timeout": 3}).conn_timeout == 3
    with pytest.raises(ConfigurationError, match="between"):
        parse({"host_key": PIN, "conn_timeout": -1})


def test_compress_from_a_uri_string() -> None:
    assert parse({"host_key": PIN, "compress": "false"}).compress is False
    assert parse({"host_key": PIN, "compress": "true"}).compress is True


def test_port_and_remote_root() -> None:
    s = parse({"host_key": PIN, "remote_root": "/data//in/"}, port="2222")
    assert s.port == 2222 and s.remote_root == "/data/in"
    with pytest.raises(ConfigurationError, match="absolute"):
        parse({"host_key": PIN, "remote_root": "data"})


def test_secrets_are_not_in_repr() -> None:
    s = parse(
        {"host_key": PIN, "private_key": KEY_TEXT, "private_key_passphrase": "pp-secret-123"},
        login="u",
        password="pw-secret-456",
    )
    text = repr(s)
    assert "pw-secret-456" not in text and "pp-secret-123" not in text
    assert base64.b64encode(b"openssh-key-v1").decode()[:10] not in text and "b3BlbnNzaC1rZXkt" not in text
