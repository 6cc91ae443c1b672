"""FTPS connection settings: what a ``secure_ftps`` (or stock ``ftp``) connection may say."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import trustme

from airflow_secure_transfer.exceptions import ConfigurationError, SecurityPolicyError
from airflow_secure_transfer.security.policy import TLSMode, TLSVersion, parse_ftps_settings

FP = hashlib.sha256(b"certificate").hexdigest()


def parse(conn_type: str = "secure_ftps", **extras: Any) -> Any:
    return parse_ftps_settings(conn_type=conn_type, host="ftps.example", login="u", password="pw", extras=extras)


def test_defaults() -> None:
    s = parse()
    assert s.tls_mode is TLSMode.EXPLICIT and s.port == 21
    assert s.min_tls_version is TLSVersion.TLSv1_2 and s.max_tls_version is None
    assert s.ca_bundle is None and s.cert_fingerprints == () and s.conn_timeout == 30
    assert s.encoding == "utf-8" and s.max_connections == 4 and s.remote_root is None


def test_implicit_mode_defaults_to_port_990_and_an_explicit_port_wins() -> None:
    assert parse(tls_mode="implicit").port == 990
    assert parse(tls_mode="IMPLICIT").tls_mode is TLSMode.IMPLICIT
    s = parse_ftps_settings(conn_type="secure_ftps", host="h", port="2990", extras={"tls_mode": "implicit"})
    assert s.port == 2990


def test_stock_ftp_connections_are_accepted_and_upgraded() -> None:
    s = parse("ftp", passive="true")
    assert s.conn_type == "ftp" and s.tls_mode is TLSMode.EXPLICIT


@pytest.mark.parametrize("mode", ["none", "plain", "off", "false", "ccc", "FTP"])
def test_plain_ftp_modes_are_refused(mode: str) -> None:
    with pytest.raises(SecurityPolicyError, match="never sends credentials or data in clear"):
        parse(tls_mode=mode)


def test_unknown_tls_mode_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="'explicit' or 'implicit'"):
        parse(tls_mode="starttls")


def test_active_mode_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="active-mode"):
        parse("ftp", passive=False)


@pytest.mark.parametrize("key", ["verify", "verify_ssl", "check_hostname", "insecure", "cert_reqs", "no_verify"])
@pytest.mark.parametrize("value", [False, "false", True])
def test_switches_that_turn_verification_off_are_refused_by_name(key: str, value: object) -> None:
    with pytest.raises(SecurityPolicyError, match="cannot be turned off"):
        parse_ftps_settings(conn_type="secure_ftps", host="h", extras={key: value})


@pytest.mark.parametrize("version", ["TLSv1", "TLSv1.1", "1.0", "SSLv3", "tls1.1"])
def test_tls_below_12_is_refused(version: str) -> None:
    with pytest.raises(SecurityPolicyError, match=r"below 1\.2"):
        parse(min_tls_version=version)
    with pytest.raises(SecurityPolicyError):
        parse(max_tls_version=version)


def test_tls_version_spellings_and_order() -> None:
    assert parse(min_tls_version="1.3").min_tls_version is TLSVersion.TLSv1_3
    assert parse(max_tls_version="TLS1.2").max_tls_version is TLSVersion.TLSv1_2
    with pytest.raises(ConfigurationError, match="below min_tls_version"):
        parse(min_tls_version="TLSv1.3", max_tls_version="TLSv1.2")


def test_unknown_extra_names_the_accepted_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown extra\(s\) 'tls_verify'.*accepted extras: tls_mode"):
        parse(tls_verify="yes")


@pytest.mark.parametrize(
    "raw",
    [FP, FP.upper(), ":".join(FP[i : i + 2] for i in range(0, 64, 2)), f"sha256:{FP}", f"SHA256:{FP.upper()}"],
)
def test_fingerprint_spellings_normalise(raw: str) -> None:
    assert parse(cert_fingerprint=raw).cert_fingerprints == (FP,)


def test_several_pins_for_a_rotation() -> None:
    other = hashlib.sha256(b"next").hexdigest()
    assert parse(cert_fingerprint=f"{FP}, {other}\n{FP}").cert_fingerprints == (FP, other)


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (hashlib.sha1(b"x").hexdigest(), SecurityPolicyError),
        (f"md5:{hashlib.md5(b'x').hexdigest()}", SecurityPolicyError),
        ("abc", ConfigurationError),
        ("zz" * 32, ConfigurationError),
    ],
)
def test_weak_or_malformed_fingerprints(raw: str, error: type[Exception]) -> None:
    with pytest.raises(error, match="cert_fingerprint"):
        parse(cert_fingerprint=raw)


def test_ca_bundle_as_text_or_path(tmp_path: Path) -> None:
    pem = trustme.CA().cert_pem.bytes().decode()
    assert parse(ca_bundle=pem).ca_bundle == pem
    path = tmp_path / "ca.pem"
    path.write_text(pem)
    assert parse(ca_bundle=str(path)).ca_bundle == pem
    with pytest.raises(ConfigurationError, match="neither PEM text"):
        parse(ca_bundle=str(tmp_path / "missing.pem"))
    (tmp_path / "junk.pem").write_text("not pem")
    with pytest.raises(ConfigurationError, match="does not contain PEM"):
        parse(ca_bundle=str(tmp_path / "junk.pem"))


def test_client_key_needs_a_certificate() -> None:
    key = trustme.CA().issue_cert("c").private_key_pem.bytes().decode()
    with pytest.raises(ConfigurationError, match="without 'client_cert'"):
        parse(client_key=key)


def test_secrets_stay_out_of_repr() -> None:
    leaf = trustme.CA().issue_cert("c")
    key = leaf.private_key_pem.bytes().decode()
    s = parse_ftps_settings(
        conn_type="secure_ftps",
        host="h",
        login="u",
        password="s3cret-Pa55",
        extras={"client_cert": leaf.cert_chain_pems[0].bytes().decode(), "client_key": key},
    )
    body = key.split("-----")[2].strip().splitlines()[0]
    assert "s3cret-Pa55" not in repr(s) and body not in repr(s)


def test_unknown_encoding_and_remote_root() -> None:
    with pytest.raises(ConfigurationError, match="unknown encoding"):
        parse(encoding="klingon")
    assert parse(encoding="latin-1").encoding == "latin-1"
    assert parse(remote_root="/data/../in").remote_root == "/in"
    with pytest.raises(ConfigurationError, match="absolute"):
        parse(remote_root="relative")
