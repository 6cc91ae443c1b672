"""SecureDownloadOperator(decrypt_with=..., verify_signature_with=...): what the partner's gpg encrypted and
signed lands decrypted and verified; a bad signature, another key or a tampered file leaves nothing."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from airflow_secure_transfer.compat import airflow_fail_exception
from airflow_secure_transfer.exceptions import ConfigurationError, VerificationError
from airflow_secure_transfer.operators.download import SecureDownloadOperator
from tests.pgp.conftest import ALICE_PASSPHRASE, PGPTestKeys
from tests.servers import FTPSServer, SFTPServer

MakeConn = Callable[..., str]
AirflowFailException = airflow_fail_exception()


@pytest.fixture(autouse=True)
def _staging(private_staging_base: Path) -> Path:
    return private_staging_base


@pytest.fixture
def keys_conns(pgp_keys: PGPTestKeys, pgp_conn: MakeConn) -> tuple[str, str]:
    ours = pgp_conn("our_pgp", private_key=pgp_keys.secret["alice"], password=ALICE_PASSPHRASE)
    partner = pgp_conn("partner_pgp", public_keys=pgp_keys.public["bob"])
    return ours, partner


def _serve(server: FTPSServer | SFTPServer, rel: str, data: bytes) -> str:
    path = server.local_root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return f"{server.writable_dir}/{rel}"


def _no_leftovers(*dirs: Path) -> None:
    for d in dirs:
        if d.exists():
            assert list(d.rglob(".*.part")) == []


@pytest.mark.parametrize("server_name", ["asyncssh_server", "pyftpd_explicit"])
def test_partner_encrypted_and_signed_files_land_decrypted_and_verified(
    request: pytest.FixtureRequest,
    server_name: str,
    airflow_conn: MakeConn,
    keys_conns: tuple[str, str],
    pgp_keys: PGPTestKeys,
    tmp_path: Path,
    private_staging_base: Path,
) -> None:
    server: FTPSServer | SFTPServer = request.getfixturevalue(server_name)
    ours, partner = keys_conns
    plain = {"a.csv": b"id,amount\n1,10\n", "big.bin": os.urandom(2_000_000)}
    _serve(server, "out/a.csv.pgp", pgp_keys.signed_for(plain["a.csv"]))
    _serve(server, "out/big.bin.asc", pgp_keys.signed_for(plain["big.bin"], armor=True))
    records = SecureDownloadOperator(
        task_id="fetch",
        conn_id=airflow_conn("partner", server),
        remote_path=f"{server.writable_dir}/out",
        local_path=str(tmp_path / "in"),
        decrypt_with=ours,
        verify_signature_with=partner,
        remote_archive_dir=f"{server.writable_dir}/done",
    ).execute(context={})
    by_name = {Path(r["local_path"]).name: r for r in records}
    assert sorted(by_name) == ["a.csv", "big.bin"]  # the .pgp / .asc suffix is gone
    for name, data in plain.items():
        assert (tmp_path / "in" / name).read_bytes() == data
        record = by_name[name]
        assert record["decrypted"] is True and record["sha256"] == hashlib.sha256(data).hexdigest()
        assert record["size"] == len(data) and record["remote_sha256"] != record["sha256"]
        assert record["archived_to"].startswith(f"{server.writable_dir}/done/")  # settled after decryption
    assert not (server.local_root / "out" / "a.csv.pgp").exists()
    assert list(private_staging_base.rglob("*.pgp")) == []  # no ciphertext left on the worker
    _no_leftovers(tmp_path / "in")


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("signed_by_another_key", "not among the accepted signers"),
        ("unsigned", "the message is not signed"),
        ("expired_signer", "no good signature by an accepted key"),
        ("encrypted_to_another_key", "the file is encrypted to key id"),
        ("tampered", "damaged or was tampered with"),
    ],
)
def test_bad_files_fail_without_retry_and_leave_nothing(
    asyncssh_server: SFTPServer,
    airflow_conn: MakeConn,
    keys_conns: tuple[str, str],
    pgp_keys: PGPTestKeys,
    tmp_path: Path,
    case: str,
    error: str,
) -> None:
    ours, partner = keys_conns
    data = b"payroll,2026-12\n"
    if case == "signed_by_another_key":
        blob = pgp_keys.signed_for(data, signer="stranger")
    elif case == "unsigned":
        blob = pgp_keys.gpg("--encrypt", "--recipient", pgp_keys.fpr["alice"], "--output", "-", stdin=data).stdout
    elif case == "expired_signer":
        blob = pgp_keys.expired_signed
    elif case == "encrypted_to_another_key":
        blob = pgp_keys.signed_for(data, to="stranger")
    else:
        good = bytearray(pgp_keys.signed_for(data))
        good[len(good) // 2] ^= 0x55
        blob = bytes(good)
    remote = _serve(asyncssh_server, "out/pay.csv.gpg", blob)
    with pytest.raises(AirflowFailException, match=error) as info:
        SecureDownloadOperator(
            task_id="fetch",
            conn_id=airflow_conn("partner", asyncssh_server),
            remote_path=remote,
            local_path=str(tmp_path / "in") + "/",
            decrypt_with=ours,
            verify_signature_with=partner,
            delete_source=True,
        ).execute(context={})
    assert isinstance(info.value.__cause__, VerificationError)
    assert not (tmp_path / "in" / "pay.csv").exists()
    _no_leftovers(tmp_path / "in")
    assert (asyncssh_server.local_root / "out" / "pay.csv.gpg").exists()  # never deleted on a failure


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"verify_signature_with": "p"}, "set decrypt_with"),
        ({"decrypt_with": "k", "overwrite": "skip_identical"}, "skip_identical"),
    ],
)
def test_pgp_download_arguments_checked_at_parse_time(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        SecureDownloadOperator(task_id="t", conn_id="c", remote_path="/x", local_path="/y", **kwargs)  # type: ignore[arg-type]
