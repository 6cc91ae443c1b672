"""SecureUploadOperator(encrypt_with=..., sign_with=..., armor=...): the server holds ciphertext that gpg decrypts."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from airflow_secure_transfer.compat import airflow_fail_exception
from airflow_secure_transfer.exceptions import ConfigurationError
from airflow_secure_transfer.hooks.pgp import pgp_key_store
from airflow_secure_transfer.operators.upload import SecureUploadOperator
from airflow_secure_transfer.transfer.encrypted import stage_encrypted, staging_path, task_staging_dir
from airflow_secure_transfer.transfer.engine import partial_name
from airflow_secure_transfer.transfer.local import LocalFile
from tests.pgp.conftest import ALICE_PASSPHRASE, PGPTestKeys
from tests.servers import FTPSServer, SFTPServer

MakeConn = Callable[..., str]


@pytest.fixture(autouse=True)
def _staging(private_staging_base: Path) -> Path:
    return private_staging_base


@pytest.fixture
def keys_conns(pgp_keys: PGPTestKeys, pgp_conn: MakeConn) -> tuple[str, str]:
    partner = pgp_conn("partner_pgp", public_keys=pgp_keys.public["bob"])
    ours = pgp_conn("our_pgp", private_key=pgp_keys.secret["alice"], password=ALICE_PASSPHRASE)
    return partner, ours


def _decrypt_with_gpg(pgp_keys: PGPTestKeys, data: bytes) -> tuple[bytes, str]:
    cli = pgp_keys.gpg("--status-fd", "2", "--decrypt", stdin=data)
    return cli.stdout, cli.stderr.decode()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("server_name", ["asyncssh_server", "pyftpd_explicit"])
def test_encrypted_signed_upload_decrypts_with_gpg(
    request: pytest.FixtureRequest,
    server_name: str,
    airflow_conn: MakeConn,
    keys_conns: tuple[str, str],
    pgp_keys: PGPTestKeys,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    server: FTPSServer | SFTPServer = request.getfixturevalue(server_name)
    partner, ours = keys_conns
    src = tmp_path / "out"
    (src / "sub").mkdir(parents=True)
    files = {"a.csv": os.urandom(2_500_000), "sub/b.csv": b"id,amount\n1,2\n"}
    for rel, data in files.items():
        (src / rel).write_bytes(data)
    conn_id = airflow_conn("target", server)
    op = SecureUploadOperator(
        task_id="send_encrypted",
        conn_id=conn_id,
        local_path=str(src),
        remote_path=f"{server.writable_dir}/in/",
        encrypt_with=partner,
        sign_with=ours,
        verify="checksum",
    )
    records = op.execute(context={})
    by_local = {r["local_path"]: r for r in records}
    for rel, data in files.items():
        landed = (server.local_root / "in" / f"{rel}.pgp").read_bytes()
        assert not (server.local_root / "in" / rel).exists()
        plain, status = _decrypt_with_gpg(pgp_keys, landed)
        assert plain == data
        assert f"VALIDSIG {pgp_keys.fpr['alice']}" in status
        record = by_local[str(src / rel)]
        assert record["remote_path"] == f"{server.writable_dir}/in/{rel}.pgp"
        assert record["encrypted"] is True and record["verified"] == "checksum"
        assert record["sha256"] == _sha(data) and record["size"] == len(data)
        assert record["remote_sha256"] == _sha(landed)
    assert ALICE_PASSPHRASE not in repr(records)
    out, err = capfd.readouterr()
    logged = caplog.text + out + err  # stdlib logging and the task logger (structlog, to the terminal)
    assert pgp_keys.fpr["bob"] in logged  # the log says whom the files were encrypted to
    assert ALICE_PASSPHRASE not in logged and "PRIVATE KEY" not in logged
    # Nothing of the task's staging is left behind.
    assert not staging_path(op._task_identity()).exists()


def test_armored_upload_to_a_named_file_keeps_the_name(
    asyncssh_server: SFTPServer,
    airflow_conn: MakeConn,
    keys_conns: tuple[str, str],
    pgp_keys: PGPTestKeys,
    tmp_path: Path,
) -> None:
    partner, _ = keys_conns
    data = b"name,value\nx,1\n" * 1000
    (tmp_path / "r.csv").write_bytes(data)
    op = SecureUploadOperator(
        task_id="armored",
        conn_id=airflow_conn("target", asyncssh_server),
        local_path=str(tmp_path / "r.csv"),
        remote_path=f"{asyncssh_server.writable_dir}/named.txt",
        encrypt_with=partner,
        armor=True,
    )
    (record,) = op.execute(context={})
    landed = (asyncssh_server.local_root / "named.txt").read_bytes()
    assert landed.startswith(b"-----BEGIN PGP MESSAGE-----")
    plain, status = _decrypt_with_gpg(pgp_keys, landed)
    assert plain == data and "VALIDSIG" not in status
    assert record["remote_path"].endswith("/named.txt") and record["encrypted"] is True


def test_directory_target_gets_the_asc_suffix(
    pyftpd_explicit: FTPSServer,
    airflow_conn: MakeConn,
    keys_conns: tuple[str, str],
    pgp_keys: PGPTestKeys,
    tmp_path: Path,
) -> None:
    partner, ours = keys_conns
    (tmp_path / "r.csv").write_bytes(b"1,2,3\n")
    op = SecureUploadOperator(
        task_id="armored_dir",
        conn_id=airflow_conn("target", pyftpd_explicit),
        local_path=str(tmp_path / "r.csv"),
        remote_path=f"{pyftpd_explicit.writable_dir}/",
        encrypt_with=partner,
        sign_with=ours,
        armor=True,
    )
    (record,) = op.execute(context={})
    assert record["remote_path"] == f"{pyftpd_explicit.writable_dir}/r.csv.asc"
    plain, _ = _decrypt_with_gpg(pgp_keys, (pyftpd_explicit.local_root / "r.csv.asc").read_bytes())
    assert plain == b"1,2,3\n"


def test_retry_resumes_the_same_ciphertext(
    asyncssh_server: SFTPServer,
    airflow_conn: MakeConn,
    keys_conns: tuple[str, str],
    pgp_keys: PGPTestKeys,
    tmp_path: Path,
) -> None:
    """A first try staged the ciphertext and left half of it on the server: the retry resumes those bytes."""
    partner, ours = keys_conns
    data = os.urandom(3_000_000)
    (tmp_path / "big.bin").write_bytes(data)
    remote = f"{asyncssh_server.writable_dir}/big.bin.pgp"
    op = SecureUploadOperator(
        task_id="resume",
        conn_id=airflow_conn("target", asyncssh_server),
        local_path=str(tmp_path / "big.bin"),
        remote_path=f"{asyncssh_server.writable_dir}/",
        encrypt_with=partner,
        sign_with=ours,
    )
    op._context = {}
    # What the first try did before its connection was cut: staged the ciphertext, sent half of it.
    with pgp_key_store(encrypt_with=partner, sign_with=ours) as store:
        staged = stage_encrypted(str(tmp_path / "big.bin"), store, task_staging_dir(op._task_identity()), sign=True)
    cipher = Path(staged.local_path)
    st = cipher.stat()
    part = partial_name(remote, LocalFile(str(cipher), cipher.name, st.st_size, st.st_mtime_ns))
    ciphertext = cipher.read_bytes()
    (asyncssh_server.local_root / Path(part).name).write_bytes(ciphertext[: len(ciphertext) // 2])

    (record,) = op.execute(context={})
    landed = (asyncssh_server.local_root / "big.bin.pgp").read_bytes()
    assert record["resumed"] is True and record["bytes"] == len(ciphertext) - len(ciphertext) // 2
    assert landed == ciphertext  # the very ciphertext of the first try, not a new encryption
    assert record["remote_sha256"] == _sha(landed)
    assert _decrypt_with_gpg(pgp_keys, landed)[0] == data


def test_delete_source_deletes_the_plain_file(
    asyncssh_server: SFTPServer, airflow_conn: MakeConn, keys_conns: tuple[str, str], tmp_path: Path
) -> None:
    partner, _ = keys_conns
    (tmp_path / "outbox").mkdir()
    (tmp_path / "outbox" / "x.csv").write_bytes(b"x")
    op = SecureUploadOperator(
        task_id="move",
        conn_id=airflow_conn("target", asyncssh_server),
        local_path=str(tmp_path / "outbox"),
        remote_path=f"{asyncssh_server.writable_dir}/",
        encrypt_with=partner,
        delete_source=True,
    )
    (record,) = op.execute(context={})
    assert record["source_deleted"] is True and not (tmp_path / "outbox" / "x.csv").exists()
    assert (asyncssh_server.local_root / "x.csv.pgp").exists()


def test_bad_key_fails_the_task_without_retry(
    asyncssh_server: SFTPServer, airflow_conn: MakeConn, pgp_conn: MakeConn, pgp_keys: PGPTestKeys, tmp_path: Path
) -> None:
    expired = pgp_conn("expired_partner", public_keys=pgp_keys.public["expired"])
    (tmp_path / "x.csv").write_bytes(b"x")
    op = SecureUploadOperator(
        task_id="bad_key",
        conn_id=airflow_conn("target", asyncssh_server),
        local_path=str(tmp_path / "x.csv"),
        remote_path=f"{asyncssh_server.writable_dir}/",
        encrypt_with=expired,
    )
    with pytest.raises(airflow_fail_exception(), match=r"SecurityPolicyError: recipient key .* expired"):
        op.execute(context={})
    assert list(asyncssh_server.local_root.iterdir()) == []
    assert not staging_path(op._task_identity()).exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sign_with": "ours"}, "needs encrypt_with"),
        ({"armor": True}, "armor=True only applies to encrypted files"),
        ({"encrypt_with": "p", "armor": "yes"}, "armor must be True or False"),
        ({"encrypt_with": ""}, "encrypt_with must be the conn id"),
    ],
)
def test_pgp_arguments_checked_at_parse_time(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        SecureUploadOperator(task_id="t", conn_id="c", local_path="/x", remote_path="/in/", **kwargs)  # type: ignore[arg-type]


def test_stale_staging_of_an_abandoned_task_is_removed(tmp_path: Path) -> None:
    from airflow_secure_transfer.transfer.encrypted import STALE_AFTER

    old = task_staging_dir("abandoned task", base=tmp_path)
    (old / "x").mkdir()
    past = os.stat(old).st_mtime - STALE_AFTER - 60
    os.utime(old, (past, past))
    fresh = task_staging_dir("another task", base=tmp_path)
    assert fresh.exists() and not old.exists()
    assert oct(fresh.stat().st_mode & 0o777) == "0o700" and oct(fresh.parent.stat().st_mode & 0o777) == "0o700"


def test_staging_refuses_a_directory_others_can_enter(tmp_path: Path) -> None:
    from airflow_secure_transfer.exceptions import SecurityPolicyError

    base = tmp_path / f"airflow-secure-transfer-pgp-{os.getuid()}"
    base.mkdir(mode=0o755)
    base.chmod(0o755)
    with pytest.raises(SecurityPolicyError, match="mode 0700"):
        task_staging_dir("t", base=tmp_path)


def test_staging_reuses_its_ciphertext_and_a_new_encryption_gets_new_paths(
    pgp_keys: PGPTestKeys, tmp_path: Path
) -> None:
    """Resume keeps the very ciphertext; ciphertext made again (another worker, staging lost) never
    shares a local path, so never a partial name on the server, with the old one."""
    from airflow_secure_transfer.security.pgp import PGPKeyStore
    from airflow_secure_transfer.transfer.encrypted import discard_staging

    (tmp_path / "src").mkdir()
    for name in ("a.csv", "b.csv"):
        (tmp_path / "src" / name).write_bytes(os.urandom(10_000))
    (tmp_path / "staging").mkdir()
    task_dir = task_staging_dir("resume identity", base=tmp_path / "staging")
    with PGPKeyStore(recipients=pgp_keys.public["bob"]) as store:
        first = stage_encrypted(str(tmp_path / "src"), store, task_dir)
        again = stage_encrypted(str(tmp_path / "src"), store, task_dir)
        assert again.reused == 2 and again.files.keys() == first.files.keys()
        assert {k: v.ciphertext_sha256 for k, v in again.files.items()} == {
            k: v.ciphertext_sha256 for k, v in first.files.items()
        }
        discard_staging(task_dir)
        task_dir = task_staging_dir("resume identity", base=tmp_path / "staging")
        fresh = stage_encrypted(str(tmp_path / "src"), store, task_dir)
    assert fresh.reused == 0 and not set(fresh.files) & set(first.files)
    assert Path(fresh.local_path).is_dir() and sorted(p.name for p in Path(fresh.local_path).iterdir()) == [
        "a.csv.pgp",
        "b.csv.pgp",
    ]
