"""security/pgp.py against the real gpg CLI: key checks, interop both ways, and every way a message is refused."""

from __future__ import annotations

import io
import logging
import os
import traceback
from pathlib import Path

import pytest

from airflow_secure_transfer.exceptions import ConfigurationError, SecurityPolicyError, VerificationError
from airflow_secure_transfer.security.pgp import PGPKeyStore, inspect_keys, strip_pgp_suffix
from tests.pgp.conftest import ALICE_PASSPHRASE, PGPTestKeys


def _agents_for(home: Path) -> list[int]:
    """Pids of gpg-agent processes started for *home* (none may outlive a store)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"gpg-agent") and str(home).encode() in cmdline:
            found.append(int(pid))
    return found


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    path = tmp_path / "report.csv"
    path.write_bytes(os.urandom(300_000) + b"\nend\n")
    return path


def _store(keys: PGPTestKeys, **kw: object) -> PGPKeyStore:
    return PGPKeyStore(**kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- keys


def test_inspect_describes_fingerprint_uids_algorithms_expiry(pgp_keys: PGPTestKeys) -> None:
    (bob,) = inspect_keys(pgp_keys.public["bob"])
    assert bob.fingerprint == pgp_keys.fpr["bob"]
    assert bob.user_ids == ("Bob Partner <bob@example.invalid>",)
    text = bob.describe()
    assert "RSA 3072 [sc]" in text and "RSA 3072 [e]" in text and "never expires" in text
    (alice,) = inspect_keys(pgp_keys.secret["alice"], secret=True)  # no passphrase needed to describe
    assert alice.has_secret and "EdDSA ed25519" in alice.describe() and "ECDH cv25519 [e]" in alice.describe()
    (erin,) = inspect_keys(pgp_keys.public["expired"])
    assert "expires 2020-01-02" in erin.describe()


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("expired", "expired on 2020-01-02"),
        ("revoked", "revoked"),
        ("rsa1024", "RSA 1024 bits (at least 2048 required)"),
        ("dsa", "DSA"),
        ("sign_only", "no valid encryption-capable (sub)key"),
    ],
)
def test_recipient_keys_refused(pgp_keys: PGPTestKeys, name: str, fragment: str) -> None:
    with pytest.raises(SecurityPolicyError, match="is refused") as info, PGPKeyStore(recipients=pgp_keys.public[name]):
        pass
    assert fragment in str(info.value)
    assert pgp_keys.fpr[name] in str(info.value)


def test_expired_signer_key_refused_for_verification(pgp_keys: PGPTestKeys) -> None:
    with pytest.raises(SecurityPolicyError, match="expired"), PGPKeyStore(verifiers=pgp_keys.public["expired"]):
        pass


def test_wrong_passphrase_refused_without_leaking_it(
    pgp_keys: PGPTestKeys, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "not-the-passphrase-91"
    with (
        pytest.raises(SecurityPolicyError, match="does not open secret key") as info,
        PGPKeyStore(secret_key=pgp_keys.secret["alice"], passphrase=wrong, purpose="sign", tmp_dir=tmp_path),
    ):
        pass
    seen = f"{info.value!r} {''.join(traceback.format_exception(info.value))} {caplog.text}"
    assert wrong not in seen and ALICE_PASSPHRASE not in seen
    assert "PRIVATE KEY" not in seen
    assert list(tmp_path.iterdir()) == []  # the store is gone


def test_right_passphrase_opens_and_store_is_removed(pgp_keys: PGPTestKeys, tmp_path: Path) -> None:
    with PGPKeyStore(
        secret_key=pgp_keys.secret["alice"], passphrase=ALICE_PASSPHRASE, purpose="sign", tmp_dir=tmp_path
    ) as store:
        home = store.home
        assert oct(home.stat().st_mode & 0o777) == "0o700"
        assert ALICE_PASSPHRASE not in repr(store)
    assert not home.exists()
    assert _agents_for(home) == []


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"recipients": "not a key"}, ConfigurationError, "ASCII-armoured"),
        (
            {"recipients": "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nxx\n-----END PGP PUBLIC KEY BLOCK-----"},
            ConfigurationError,
            "no OpenPGP key",
        ),
        ({"secret_key": "PUBLIC:bob"}, ConfigurationError, "holds no secret key"),
        ({"recipients": "SECRET:bob"}, SecurityPolicyError, "secret key material"),
    ],
)
def test_malformed_key_text(
    pgp_keys: PGPTestKeys, kwargs: dict[str, str], error: type[Exception], fragment: str
) -> None:
    resolved = {
        k: (
            pgp_keys.public[v[7:]]
            if v.startswith("PUBLIC:")
            else pgp_keys.secret[v[7:]]
            if v.startswith("SECRET:")
            else v
        )
        for k, v in kwargs.items()
    }
    with pytest.raises(error, match=fragment) as info, PGPKeyStore(**resolved):  # type: ignore[arg-type]
        pass
    assert "PRIVATE KEY BLOCK" not in str(info.value)


def test_strip_pgp_suffix() -> None:
    assert strip_pgp_suffix("a.csv.pgp") == "a.csv"
    assert strip_pgp_suffix("a.csv.GPG") == "a.csv"
    assert strip_pgp_suffix("a.csv.asc") == "a.csv"
    assert strip_pgp_suffix(".pgp") == ".pgp"
    assert strip_pgp_suffix("a.csv") == "a.csv"


# --------------------------------------------------------------------------- interop: ours -> gpg


@pytest.mark.parametrize("armor", [False, True], ids=["binary", "armored"])
@pytest.mark.parametrize("sign", [False, True], ids=["unsigned", "signed"])
def test_gpg_cli_decrypts_what_we_encrypt(
    pgp_keys: PGPTestKeys, plain: Path, tmp_path: Path, armor: bool, sign: bool
) -> None:
    out = tmp_path / ("out.asc" if armor else "out.pgp")
    with PGPKeyStore(
        recipients=pgp_keys.public["bob"],
        secret_key=pgp_keys.secret["alice"] if sign else None,
        passphrase=ALICE_PASSPHRASE if sign else None,
        purpose="sign",
    ) as store:
        result = store.encrypt(plain, out, sign=sign, armor=armor)
    data = out.read_bytes()
    assert data.startswith(b"-----BEGIN PGP MESSAGE-----") == armor
    assert result.ciphertext_bytes == len(data) and result.plaintext_bytes == plain.stat().st_size
    assert result.recipients == (pgp_keys.fpr["bob"],)
    cli = pgp_keys.gpg("--status-fd", "2", "--decrypt", stdin=data)
    assert cli.stdout == plain.read_bytes()
    status = cli.stderr.decode()
    assert f"ENC_TO {pgp_keys.fpr['bob'][-16:]}" in status or "ENC_TO" in status
    if sign:
        assert f"VALIDSIG {pgp_keys.fpr['alice']}" in status and "GOODSIG" in status
        assert result.signer == pgp_keys.fpr["alice"]
    else:
        assert "SIG" not in status.replace("SIG_ID", "")


def test_encrypt_to_several_recipients_file_objects(pgp_keys: PGPTestKeys) -> None:
    both = pgp_keys.public["bob"] + "\n" + pgp_keys.public["alice"]
    sink = io.BytesIO()
    with PGPKeyStore(recipients=both) as store:
        store.encrypt(io.BytesIO(b"to both"), sink)
    fingerprints = [k.fingerprint for k in store.recipient_keys]
    assert sorted(fingerprints) == sorted([pgp_keys.fpr["bob"], pgp_keys.fpr["alice"]])
    assert pgp_keys.gpg("--decrypt", stdin=sink.getvalue()).stdout == b"to both"


# --------------------------------------------------------------------------- interop: gpg -> ours


def _ours_decrypt(pgp_keys: PGPTestKeys, **kw: object) -> PGPKeyStore:
    return PGPKeyStore(
        secret_key=pgp_keys.secret["alice"],
        passphrase=ALICE_PASSPHRASE,
        purpose="decrypt",
        verifiers=pgp_keys.public["bob"],
        **kw,
    )  # type: ignore[arg-type]


@pytest.mark.parametrize("armor", [False, True], ids=["binary", "armored"])
def test_we_decrypt_and_verify_what_gpg_signs_and_encrypts(
    pgp_keys: PGPTestKeys, plain: Path, tmp_path: Path, armor: bool
) -> None:
    message = pgp_keys.signed_for(plain.read_bytes(), armor=armor)
    (tmp_path / "in.pgp").write_bytes(message)
    with _ours_decrypt(pgp_keys) as store:
        result = store.decrypt(tmp_path / "in.pgp", tmp_path / "out.tmp", verify=True)
    assert (tmp_path / "out.tmp").read_bytes() == plain.read_bytes()
    assert result.signer == pgp_keys.fpr["bob"]
    assert result.ciphertext_bytes == len(message)


def test_unsigned_message_decrypts_but_fails_verification(pgp_keys: PGPTestKeys, tmp_path: Path) -> None:
    message = pgp_keys.gpg("--encrypt", "--recipient", pgp_keys.fpr["alice"], "--output", "-", stdin=b"unsigned").stdout
    with _ours_decrypt(pgp_keys) as store:
        sink = io.BytesIO()
        assert store.decrypt(io.BytesIO(message), sink).signer is None
        assert sink.getvalue() == b"unsigned"
        with pytest.raises(VerificationError, match="the message is not signed"):
            store.decrypt(io.BytesIO(message), tmp_path / "out.tmp", verify=True)
    assert not (tmp_path / "out.tmp").exists()


def test_streaming_decryptor_in_small_writes(pgp_keys: PGPTestKeys, plain: Path, tmp_path: Path) -> None:
    message = pgp_keys.signed_for(plain.read_bytes())
    with _ours_decrypt(pgp_keys) as store, open(tmp_path / "out.tmp", "wb") as sink:
        with store.decryptor(sink, verify=True) as stream:
            for i in range(0, len(message), 7777):
                stream.write(message[i : i + 7777])
    assert stream.result is not None and stream.result.signer == pgp_keys.fpr["bob"]
    assert (tmp_path / "out.tmp").read_bytes() == plain.read_bytes()


# --------------------------------------------------------------------------- refusals (nothing at the final path)


def _refused(pgp_keys: PGPTestKeys, tmp_path: Path, message: bytes, fragment: str) -> VerificationError:
    (tmp_path / "in.pgp").write_bytes(message)
    stores = tmp_path / "stores"
    stores.mkdir()
    final = tmp_path / "final.csv"
    temp = tmp_path / ".final.csv.tmp"
    with pytest.raises(VerificationError, match=fragment) as info, _ours_decrypt(pgp_keys, tmp_dir=stores) as store:
        store.decrypt(tmp_path / "in.pgp", temp, verify=True)
        os.replace(temp, final)  # never reached
    assert not final.exists() and not temp.exists()
    assert list(stores.iterdir()) == []  # the key store is removed after the failure
    assert _agents_for(stores) == []  # and its gpg-agent stopped
    assert ALICE_PASSPHRASE not in str(info.value) and "PRIVATE KEY" not in str(info.value)
    return info.value


def test_tampered_ciphertext(pgp_keys: PGPTestKeys, plain: Path, tmp_path: Path) -> None:
    message = bytearray(pgp_keys.signed_for(plain.read_bytes()))
    message[len(message) // 2] ^= 0x40
    _refused(pgp_keys, tmp_path, bytes(message), "damaged or was tampered with")


def test_signature_by_another_key(pgp_keys: PGPTestKeys, plain: Path, tmp_path: Path) -> None:
    exc = _refused(
        pgp_keys,
        tmp_path,
        pgp_keys.signed_for(plain.read_bytes(), signer="stranger"),
        "no good signature by an accepted key",
    )
    assert "not among the accepted signers" in str(exc)


def test_expired_signer_key(pgp_keys: PGPTestKeys, tmp_path: Path) -> None:
    exc = _refused(pgp_keys, tmp_path, pgp_keys.expired_signed, "no good signature")
    assert "not among the accepted signers" in str(exc) or "expired" in str(exc)


def test_expired_signer_even_when_accepted(pgp_keys: PGPTestKeys, tmp_path: Path) -> None:
    """Had the expired key been configured (check off), its signature still does not count."""
    with PGPKeyStore(
        secret_key=pgp_keys.secret["alice"],
        passphrase=ALICE_PASSPHRASE,
        verifiers=pgp_keys.public["expired"],
        check=False,
    ) as store:
        with pytest.raises(VerificationError, match="whose key has expired"):
            store.decrypt(io.BytesIO(pgp_keys.expired_signed), io.BytesIO(), verify=True)


def test_encrypted_to_a_different_key(pgp_keys: PGPTestKeys, plain: Path, tmp_path: Path) -> None:
    _refused(pgp_keys, tmp_path, pgp_keys.signed_for(plain.read_bytes(), to="stranger"), "is encrypted to key id")


def test_signed_only_not_encrypted(pgp_keys: PGPTestKeys, tmp_path: Path) -> None:
    signed = pgp_keys.gpg("--sign", "--local-user", pgp_keys.fpr["bob"], "--output", "-", stdin=b"clear").stdout
    _refused(pgp_keys, tmp_path, signed, "not an encrypted OpenPGP message")


def test_not_pgp_at_all(pgp_keys: PGPTestKeys, tmp_path: Path) -> None:
    _refused(pgp_keys, tmp_path, b"just,a,csv\n1,2,3\n", "not an OpenPGP message")


def test_max_output_stops_a_compression_bomb(pgp_keys: PGPTestKeys, tmp_path: Path) -> None:
    bomb = pgp_keys.gpg(
        "--compress-algo",
        "zlib",
        "-z",
        "9",
        "--encrypt",
        "--recipient",
        pgp_keys.fpr["alice"],
        "--output",
        "-",
        stdin=b"\0" * 20_000_000,
    ).stdout
    assert len(bomb) < 100_000
    with _ours_decrypt(pgp_keys) as store, pytest.raises(VerificationError, match="exceeds max_output"):
        store.decrypt(io.BytesIO(bomb), tmp_path / "out.tmp", max_output=1_000_000)
    assert not (tmp_path / "out.tmp").exists()


def test_key_pasted_on_one_line_with_spaces(pgp_keys: PGPTestKeys) -> None:
    """A masked one-line form input turns the armour's line breaks into spaces: the key still loads."""
    one_line = " ".join(pgp_keys.secret["alice"].split("\n"))
    with PGPKeyStore(secret_key=one_line, passphrase=ALICE_PASSPHRASE, purpose="sign") as store:
        assert store.secret_keys[0].fingerprint == pgp_keys.fpr["alice"]
    both = " ".join((pgp_keys.public["bob"] + pgp_keys.public["stranger"]).split("\n"))
    assert len(inspect_keys(both)) == 2


def test_uncompressed_encryption_decrypts_with_gpg(pgp_keys: PGPTestKeys) -> None:
    text = b"a,b,c\n" * 50_000  # compresses well: only the uncompressed message stays this big
    sink = io.BytesIO()
    with PGPKeyStore(recipients=pgp_keys.public["bob"]) as store:
        result = store.encrypt(io.BytesIO(text), sink, compress=False)
    assert result.ciphertext_bytes > len(text)
    assert pgp_keys.gpg("--decrypt", stdin=sink.getvalue()).stdout == text
