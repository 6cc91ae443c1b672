"""Host-key trust and refusals against real servers: each failure has its class, happens once, and fast.

"Once" is counted at the server (the custom asyncssh server counts TCP connections and
authentication requests; sshd is counted by a proxy in front of it). "Before
authentication" means the server received no authentication request at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import asyncssh
import pytest

from airflow_secure_transfer.exceptions import (
    AuthenticationError,
    SecurityPolicyError,
    VerificationError,
)
from airflow_secure_transfer.security.hostkeys import fingerprint
from airflow_secure_transfer.transfer.sftp import SFTPClient
from tests.servers import SFTPServer
from tests.servers.proxy import RecordingProxy
from tests.sftp._servers import CustomServer
from tests.sftp.conftest import make_settings

pytestmark = pytest.mark.timeout(60)

FAIL_WITHIN = 2.0  # seconds; the bound for every refusal below


def _line(key: asyncssh.SSHKey) -> str:
    return " ".join(key.export_public_key("openssh").decode().split()[:2])


def _fp(line: str) -> str:
    import base64

    return fingerprint(base64.b64decode(line.split()[1]))


@contextmanager
def _fails_fast() -> Iterator[None]:
    started = time.monotonic()
    yield
    elapsed = time.monotonic() - started
    assert elapsed < FAIL_WITHIN, f"took {elapsed:.2f} s"


@pytest.fixture
def server(custom_sshd: Callable[..., CustomServer]) -> CustomServer:
    return custom_sshd()


# --------------------------------------------------------------------------- refused before authentication


def test_changed_host_key_pin(server: CustomServer) -> None:
    other = _line(asyncssh.generate_private_key("ssh-ed25519"))
    with _fails_fast(), pytest.raises(VerificationError) as err:
        SFTPClient(make_settings(server, host_key=other))
    msg = str(err.value)
    assert "does not match" in msg
    assert _fp(server.host_key_line) in msg  # what the server presented
    assert _fp(other) in msg  # what we expected
    assert server.password not in msg
    assert not err.value.retryable
    assert server.connections == 1 and server.auth_attempts == []


def test_changed_host_key_known_hosts(server: CustomServer) -> None:
    other = _line(asyncssh.generate_private_key("ssh-ed25519"))
    known_hosts = f"[{server.host}]:{server.port} {other}\n"
    with _fails_fast(), pytest.raises(VerificationError) as err:
        SFTPClient(make_settings(server, host_key=None, known_hosts=known_hosts))
    msg = str(err.value)
    assert "does not match" in msg and _fp(server.host_key_line) in msg and _fp(other) in msg
    assert "extra 'known_hosts'" in msg
    assert server.connections == 1 and server.auth_attempts == []


def test_unknown_host_known_hosts_has_no_entry_for_host_and_port(server: CustomServer) -> None:
    # Entries for another port, and the bare host name (which OpenSSH uses for port 22 only).
    known_hosts = (
        f"[{server.host}]:{server.port + 1} {server.host_key_line}\n"
        f"{server.host} {server.host_key_line}\n"
        f"[localhost]:{server.port} {server.host_key_line}\n"
    )
    with _fails_fast(), pytest.raises(VerificationError) as err:
        SFTPClient(make_settings(server, host_key=None, known_hosts=known_hosts))
    msg = str(err.value)
    assert "unknown" in msg and _fp(server.host_key_line) in msg and f"[{server.host}]:{server.port}" in msg
    assert server.connections == 1 and server.auth_attempts == []


def test_revoked_key_is_refused_even_when_also_listed(server: CustomServer) -> None:
    known_hosts = f"[{server.host}]:{server.port} {server.host_key_line}\n@revoked * {server.host_key_line}\n"
    with _fails_fast(), pytest.raises(VerificationError, match="REVOKED"):
        SFTPClient(make_settings(server, host_key=None, known_hosts=known_hosts))
    assert server.connections == 1 and server.auth_attempts == []


def test_cert_authority_line_trusts_nothing(server: CustomServer) -> None:
    known_hosts = f"@cert-authority * {server.host_key_line}\n"
    with pytest.raises(VerificationError, match="unknown"):
        SFTPClient(make_settings(server, host_key=None, known_hosts=known_hosts))
    assert server.auth_attempts == []


def test_pinned_type_not_offered_by_the_server(custom_sshd: Callable[..., CustomServer]) -> None:
    server = custom_sshd(host_key_type="ecdsa-sha2-nistp256")
    pin = _line(asyncssh.generate_private_key("ssh-ed25519"))
    with _fails_fast(), pytest.raises(VerificationError, match="no host key of a trusted type") as err:
        SFTPClient(make_settings(server, host_key=pin))
    assert _fp(pin) in str(err.value)
    assert server.connections == 1 and server.auth_attempts == []


# --------------------------------------------------------------------------- trust that works


def test_known_hosts_with_hashed_and_wildcard_entries(server: CustomServer) -> None:
    import base64
    import hashlib
    import hmac
    import os

    salt = os.urandom(20)
    name = f"[{server.host}]:{server.port}".encode()
    digest = hmac.new(salt, name, hashlib.sha1).digest()
    hashed = f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"
    for entry in (hashed, "[127.0.0.*]:*", f"!{server.host}.invalid,[{server.host}]:{server.port}"):
        known_hosts = f"# comment\n\n{entry} {server.host_key_line}\n"
        with SFTPClient(make_settings(server, host_key=None, known_hosts=known_hosts)) as client:
            assert client.info.host_key.fingerprint == _fp(server.host_key_line)


def test_negated_pattern_excludes_the_host(server: CustomServer) -> None:
    known_hosts = f"[127.0.0.*]:*,![{server.host}]:{server.port} {server.host_key_line}\n"
    with pytest.raises(VerificationError, match="unknown"):
        SFTPClient(make_settings(server, host_key=None, known_hosts=known_hosts))


def test_host_key_algorithms_are_restricted_to_the_pinned_type(custom_sshd: Callable[..., CustomServer]) -> None:
    """A server with an ed25519 and an RSA key presents the RSA one when only that is pinned (SHA-2 signature)."""
    rsa = asyncssh.generate_private_key("ssh-rsa", key_size=2048)
    ed = asyncssh.generate_private_key("ssh-ed25519")
    server = custom_sshd(host_key=rsa, extra_host_keys=[ed])
    with SFTPClient(make_settings(server, host_key=_line(rsa))) as client:
        assert client.info.host_key.key_type == "ssh-rsa"
        assert client.info.host_key.fingerprint == _fp(_line(rsa))
    with SFTPClient(make_settings(server, host_key=_line(ed))) as client:
        assert client.info.host_key.key_type == "ssh-ed25519"
    # Both pinned: the best type is offered first.
    with SFTPClient(make_settings(server, host_key=f"{_line(rsa)}\n{_line(ed)}")) as client:
        assert client.info.host_key.key_type == "ssh-ed25519"


# --------------------------------------------------------------------------- refused before connecting


@pytest.mark.parametrize(
    ("extras", "match"),
    [
        ({"no_host_key_check": True}, "no_host_key_check"),
        ({"no_host_key_check": "true"}, "no_host_key_check"),
        ({"allow_host_key_change": True}, "allow_host_key_change"),
        ({"allow_host_key_change": "TRUE"}, "allow_host_key_change"),
        ({"host_key": None}, "no 'host_key' and no 'known_hosts'"),
        ({"host_key": "ssh-dss AAAAB3NzaC1kc3MAAACBAP"}, "DSA"),
    ],
    ids=["no_host_key_check", "no_host_key_check-str", "allow_host_key_change", "allow_change-str", "missing", "dsa"],
)
def test_policy_refusals_never_connect(server: CustomServer, extras: dict[str, Any], match: str) -> None:
    with _fails_fast(), pytest.raises(SecurityPolicyError, match=match) as err:
        SFTPClient(make_settings(server, **extras))
    assert "host_key" in str(err.value)  # the message says how to pin
    assert server.connections == 0


# --------------------------------------------------------------------------- authentication


def test_wrong_password(server: CustomServer) -> None:
    with _fails_fast(), pytest.raises(AuthenticationError) as err:
        SFTPClient(make_settings(server, password="not-the-password"))
    msg = str(err.value)
    assert "not-the-password" not in msg and server.password not in msg
    assert "sftpuser" in msg and "password" in msg
    assert not err.value.retryable
    assert server.connections == 1
    assert ("sftpuser", "password") in server.auth_attempts


def test_wrong_passphrase_is_a_configuration_error(asyncssh_server: SFTPServer) -> None:
    from airflow_secure_transfer.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match="wrong 'private_key_passphrase'") as err:
        SFTPClient(make_settings(asyncssh_server, "key_file_passphrase", private_key_passphrase="wrong"))
    assert "wrong" not in str(err.value).replace("wrong 'private", "")
    with pytest.raises(ConfigurationError, match="passphrase"):
        SFTPClient(make_settings(asyncssh_server, "private_key_passphrase", private_key_passphrase=None))
    assert asyncssh_server.auth_log == []


# --------------------------------------------------------------------------- the same against OpenSSH


@pytest.fixture
def proxied(
    sshd_server: SFTPServer, recording_proxy: Callable[[str, int], RecordingProxy]
) -> tuple[SFTPServer, RecordingProxy]:
    return sshd_server, recording_proxy(sshd_server.host, sshd_server.port)


def test_openssh_changed_key_pin(proxied: tuple[SFTPServer, RecordingProxy]) -> None:
    sshd, proxy = proxied
    other = _line(asyncssh.generate_private_key("ssh-ed25519"))
    with _fails_fast(), pytest.raises(VerificationError) as err:
        SFTPClient(make_settings(sshd, port=proxy.port, host_key=other))
    assert _fp(sshd.host_key_line) in str(err.value) and _fp(other) in str(err.value)
    assert proxy.connections == 1


def test_openssh_changed_key_known_hosts(proxied: tuple[SFTPServer, RecordingProxy]) -> None:
    sshd, proxy = proxied
    other = _line(asyncssh.generate_private_key("ssh-ed25519"))
    kh = f"[{sshd.host}]:{proxy.port} {other}\n"
    with _fails_fast(), pytest.raises(VerificationError, match="does not match"):
        SFTPClient(make_settings(sshd, port=proxy.port, host_key=None, known_hosts=kh))
    assert proxy.connections == 1


def test_openssh_unknown_host(proxied: tuple[SFTPServer, RecordingProxy]) -> None:
    sshd, proxy = proxied
    kh = f"[{sshd.host}]:{sshd.port} {sshd.host_key_line}\n"  # the real port, not the one we connect to
    with _fails_fast(), pytest.raises(VerificationError, match="unknown") as err:
        SFTPClient(make_settings(sshd, port=proxy.port, host_key=None, known_hosts=kh))
    assert _fp(sshd.host_key_line) in str(err.value)
    assert proxy.connections == 1


def test_openssh_known_hosts_trust_works(proxied: tuple[SFTPServer, RecordingProxy]) -> None:
    sshd, proxy = proxied
    kh = f"[{sshd.host}]:{proxy.port} {sshd.host_key_line}\n"
    with SFTPClient(make_settings(sshd, port=proxy.port, host_key=None, known_hosts=kh)) as client:
        assert client.info.host_key.fingerprint == _fp(sshd.host_key_line)


def test_openssh_wrong_password(proxied: tuple[SFTPServer, RecordingProxy]) -> None:
    sshd, proxy = proxied
    with _fails_fast(), pytest.raises(AuthenticationError) as err:
        SFTPClient(make_settings(sshd, port=proxy.port, password="wrong-" + sshd.password))
    assert sshd.password not in str(err.value)
    assert proxy.connections == 1
