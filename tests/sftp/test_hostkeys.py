"""security.hostkeys without a server: fingerprints, known_hosts matching, algorithm restriction, messages."""

from __future__ import annotations

import base64
import hashlib
import hmac
import subprocess
from pathlib import Path

import asyncssh
import pytest

from airflow_secure_transfer.exceptions import ConfigurationError, VerificationError
from airflow_secure_transfer.security import hostkeys
from airflow_secure_transfer.security.hostkeys import HostKey, HostKeyTrust, fingerprint, known_hosts_name


def _line(key_type: str = "ssh-ed25519", key_size: int = 2048) -> str:
    if key_type == "ssh-rsa":
        key = asyncssh.generate_private_key(key_type, key_size=key_size)
    else:
        key = asyncssh.generate_private_key(key_type)
    return " ".join(key.export_public_key("openssh").decode().split()[:2])


def _blob(line: str) -> bytes:
    return base64.b64decode(line.split()[1])


def _hashed(name: str) -> str:
    salt = b"0123456789abcdefghij"
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


def test_fingerprint_matches_ssh_keygen(tmp_path: Path) -> None:
    line = _line()
    pub = tmp_path / "k.pub"
    pub.write_text(line + " comment\n")
    out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(pub)], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("ssh-keygen not available")
    assert out.stdout.split()[1] == fingerprint(_blob(line))
    assert fingerprint(_blob(line)).startswith("SHA256:") and not fingerprint(_blob(line)).endswith("=")


def test_known_hosts_name_follows_openssh() -> None:
    assert known_hosts_name("h.example", 22) == "h.example"
    assert known_hosts_name("h.example", 2222) == "[h.example]:2222"
    assert known_hosts_name("::1", 2222) == "[::1]:2222"


@pytest.mark.parametrize(
    ("entry", "host", "port", "matches"),
    [
        ("[h.example]:2222", "h.example", 2222, True),
        ("h.example", "h.example", 2222, False),  # no fall-back to the bare name off port 22
        ("h.example", "h.example", 22, True),
        ("[h.example]:22", "h.example", 22, False),  # OpenSSH writes port 22 bare
        ("H.EXAMPLE", "h.example", 22, True),  # case-insensitive
        ("other,h.example", "h.example", 22, True),
        ("*.example", "h.example", 22, True),
        ("[*.example]:*", "h.example", 2222, True),
        ("h?example", "h.example", 22, True),
        ("*.example,!h.example", "h.example", 22, False),
        ("!h.example", "h.example", 22, False),
        ("[h.example]:2222", "h.example", 22222, False),
        (_hashed("[h.example]:2222"), "h.example", 2222, True),
        (_hashed("h.example"), "h.example", 2222, False),
        ("|1|bad|hash", "h.example", 22, False),
    ],
)
def test_known_hosts_matching(entry: str, host: str, port: int, matches: bool) -> None:
    line = _line()
    trust = HostKeyTrust.build(host, port, known_hosts=f"{entry} {line}\n")
    assert trust.is_trusted(_blob(line)) is matches


def test_pins_and_known_hosts_combine_and_revocation_wins() -> None:
    a, b, c = _line(), _line(), _line()
    kh = f"[h]:2222 {b}\n@revoked [h]:2222 {c}\n"
    trust = HostKeyTrust.build("h", 2222, host_keys=(a, c), known_hosts=kh, known_hosts_source="/etc/kh")
    assert trust.is_trusted(_blob(a)) and trust.is_trusted(_blob(b))
    assert not trust.is_trusted(_blob(c))  # pinned, but revoked in known_hosts
    assert trust.sources == ("extra 'host_key'", "/etc/kh")
    with pytest.raises(VerificationError, match="REVOKED"):
        trust.check(_blob(c))


def test_cert_authority_and_dsa_lines_trust_nothing() -> None:
    dsa = "ssh-dss AAAAB3NzaC1kc3MAAACBAP"
    trust = HostKeyTrust.build("h", 22, known_hosts=f"@cert-authority h {_line()}\nh {dsa}\n")
    assert trust.trusted == ()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("h", "expected '<host patterns> <key type> <base64 key>'"),
        ("@bogus h ssh-ed25519 AAAA", "unknown marker"),
        ("h ssh-ed25519 !!!", "invalid base64"),
    ],
)
def test_malformed_matching_known_hosts_lines_are_errors(text: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        HostKeyTrust.build("h", 22, known_hosts=text + "\n", known_hosts_source="kh")


def test_host_key_algorithms_follow_the_pinned_types() -> None:
    ed, rsa = _line(), _line("ssh-rsa", key_size=2048)
    assert HostKeyTrust.build("h", 22, host_keys=(ed,)).host_key_algorithms() == ["ssh-ed25519"]
    rsa_algs = HostKeyTrust.build("h", 22, host_keys=(rsa,)).host_key_algorithms()
    assert rsa_algs == ["rsa-sha2-512", "rsa-sha2-256"]  # never SHA-1 "ssh-rsa"
    both = HostKeyTrust.build("h", 22, host_keys=(rsa, ed)).host_key_algorithms()
    assert both == ["ssh-ed25519", "rsa-sha2-512", "rsa-sha2-256"]
    nothing = HostKeyTrust.build("h", 22, known_hosts=f"other {ed}\n").host_key_algorithms()
    assert nothing == list(hostkeys.SECURE_HOST_KEY_ALGORITHMS) and "ssh-rsa" not in nothing


def test_refusal_messages_name_presented_and_expected_fingerprints() -> None:
    pinned, presented = _line(), _line()
    trust = HostKeyTrust.build("h", 2222, host_keys=(pinned,))
    with pytest.raises(VerificationError) as err:
        trust.check(_blob(presented))
    msg = str(err.value)
    assert "[h]:2222" in msg and "does not match" in msg
    assert f"ssh-ed25519 {fingerprint(_blob(presented))}" in msg and fingerprint(_blob(pinned)) in msg
    unknown = HostKeyTrust.build("h", 2222, known_hosts=f"[other]:2222 {pinned}\n", known_hosts_source="kh")
    with pytest.raises(VerificationError, match=r"unknown.*kh has no key for \[h\]:2222"):
        unknown.check(_blob(presented))
    assert trust.check(_blob(pinned)) == HostKey.parse(*pinned.split())


def test_secure_algorithm_lists_contain_nothing_weak() -> None:
    everything = " ".join(
        hostkeys.KEX_ALGORITHMS
        + hostkeys.CIPHERS
        + hostkeys.MAC_ALGORITHMS
        + hostkeys.CLIENT_SIGNATURE_ALGORITHMS
        + hostkeys.SECURE_HOST_KEY_ALGORITHMS
    )
    for weak in ("sha1", "cbc", "md5", "arcfour", "3des", "ssh-dss", "umac-64", "-96", "gss"):
        assert weak not in everything
    assert " ssh-rsa " not in f" {everything} "
    assert hostkeys.CIPHERS[0] == "aes128-gcm@openssh.com"
