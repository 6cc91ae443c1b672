"""Only secure algorithms are offered; a server with nothing else fails with a clear error, before authentication."""

from __future__ import annotations

from collections.abc import Callable

import asyncssh
import pytest

from airflow_secure_transfer.exceptions import SecurityPolicyError
from airflow_secure_transfer.security import hostkeys
from airflow_secure_transfer.transfer.sftp import SFTPClient
from tests.servers import SFTPServer
from tests.servers.proxy import RecordingProxy
from tests.sftp._servers import CustomServer
from tests.sftp.conftest import make_settings

pytestmark = pytest.mark.timeout(60)

WEAK_NAMES = (
    b"diffie-hellman-group1-sha1",
    b"diffie-hellman-group14-sha1",
    b"diffie-hellman-group-exchange-sha1",
    b"-cbc",
    b"arcfour",
    b"3des",
    b"blowfish",
    b"hmac-sha1",
    b"hmac-md5",
    b"umac-64",
    b"ssh-dss",
    b"gss-",
    b"rsa1024-sha1",
)


def _client_kexinit(wire: bytes) -> dict[str, list[str]]:
    """Decode the client's KEXINIT (sent in clear right after the version line)."""
    start = wire.index(b"\r\n") + 2
    packet_len = int.from_bytes(wire[start : start + 4], "big")
    payload = wire[start + 5 : start + 4 + packet_len]
    assert payload[0] == 20  # SSH_MSG_KEXINIT
    pos = 17
    names = ["kex", "host_key", "enc_cs", "enc_sc", "mac_cs", "mac_sc", "comp_cs", "comp_sc"]
    out = {}
    for name in names:
        n = int.from_bytes(payload[pos : pos + 4], "big")
        out[name] = payload[pos + 4 : pos + 4 + n].decode().split(",")
        pos += 4 + n
    return out


def test_the_client_offers_only_secure_algorithms(
    sftp_server: SFTPServer, recording_proxy: Callable[[str, int], RecordingProxy]
) -> None:
    proxy = recording_proxy(sftp_server.host, sftp_server.port)
    with SFTPClient(make_settings(sftp_server, port=proxy.port)):
        pass
    offer = _client_kexinit(proxy.client_to_server)
    flat = ",".join(",".join(v) for v in offer.values()).encode()
    for weak in WEAK_NAMES:
        assert weak not in flat, weak
    assert "ssh-rsa" not in offer["host_key"]
    assert offer["host_key"] == ["ssh-ed25519"]  # restricted to the pinned key's type
    assert offer["enc_cs"][0] == "aes128-gcm@openssh.com"
    assert set(offer["enc_cs"]) <= set(hostkeys.CIPHERS)
    assert set(offer["mac_cs"]) <= set(hostkeys.MAC_ALGORITHMS)
    assert set(offer["kex"]) - {"ext-info-c", "kex-strict-c-v00@openssh.com"} <= set(hostkeys.KEX_ALGORITHMS)
    assert offer["comp_cs"] == ["none"]


@pytest.mark.parametrize(
    ("options", "what"),
    [
        (
            {"kex_algs": ["diffie-hellman-group14-sha1"], "encryption_algs": ["aes128-cbc"], "mac_algs": ["hmac-sha1"]},
            "key exchange",
        ),
        ({"kex_algs": ["diffie-hellman-group1-sha1", "diffie-hellman-group-exchange-sha1"]}, "key exchange"),
        ({"encryption_algs": ["aes128-cbc", "aes256-cbc", "3des-cbc"]}, "encryption"),
        ({"encryption_algs": ["aes128-ctr"], "mac_algs": ["hmac-sha1", "hmac-md5"]}, "MAC"),
    ],
    ids=["all-weak", "sha1-kex", "cbc-only", "sha1-mac-only"],
)
def test_weak_only_server_is_refused(
    custom_sshd: Callable[..., CustomServer], options: dict[str, list[str]], what: str
) -> None:
    server = custom_sshd(**options)
    with pytest.raises(SecurityPolicyError) as err:
        SFTPClient(make_settings(server))
    msg = str(err.value)
    assert "no common secure algorithm" in msg and f"No matching {what} algorithm" in msg
    assert server.connections == 1 and server.auth_attempts == []


def test_sha1_only_rsa_host_key_signature_is_refused(custom_sshd: Callable[..., CustomServer]) -> None:
    server = custom_sshd(host_key_type="ssh-rsa", host_key_algorithms=["ssh-rsa"])
    with pytest.raises(SecurityPolicyError, match=r"no common secure algorithm.*SHA-1 RSA"):
        SFTPClient(make_settings(server))
    assert server.auth_attempts == []


def test_rsa_host_key_with_sha2_signatures_is_fine(custom_sshd: Callable[..., CustomServer]) -> None:
    server = custom_sshd(host_key_type="ssh-rsa")
    with SFTPClient(make_settings(server)) as client:
        assert client.info.host_key.key_type == "ssh-rsa"


def test_compression_only_when_asked(asyncssh_server: SFTPServer) -> None:
    with SFTPClient(make_settings(asyncssh_server)) as client:
        assert client.info.compression == "none"
    with SFTPClient(make_settings(asyncssh_server, compress=True)) as client:
        assert client.info.compression in ("zlib@openssh.com", "zlib")


def test_asyncssh_logger_is_quiet_by_default(asyncssh_server: SFTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """asyncssh logs every session at INFO; unless the application set its level, ours sets WARNING."""
    import logging

    from airflow_secure_transfer.transfer import sftp as sftp_module

    logger = logging.getLogger("asyncssh")
    monkeypatch.setattr(logger, "level", logging.NOTSET)
    monkeypatch.setattr(sftp_module, "_quieted", False)
    with SFTPClient(make_settings(asyncssh_server)):
        pass
    assert logger.level == logging.WARNING
    # An application's own choice is kept.
    monkeypatch.setattr(logger, "level", logging.INFO)
    monkeypatch.setattr(sftp_module, "_quieted", False)
    with SFTPClient(make_settings(asyncssh_server)):
        pass
    assert logger.level == logging.INFO
    assert asyncssh.logging.logger._debug_level < 3  # no packet dumps (they would show auth packets)
