"""example_dags/encrypt_for_partner.py runs with ``airflow dags test``; the partner's gpg decrypts what landed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_secure_transfer.demo import read_return_values
from tests.airflow.test_example_dags import _airflow, _base_env, _run, airflow_home  # noqa: F401 - a fixture
from tests.pgp.conftest import ALICE_PASSPHRASE, PGPTestKeys
from tests.servers import SFTPServer

pytestmark = [pytest.mark.airflow, pytest.mark.slow]


def test_encrypt_for_partner_runs_with_airflow_dags_test(
    airflow_home: Path,  # noqa: F811 - the imported fixture
    asyncssh_server: SFTPServer,
    pgp_keys: PGPTestKeys,
    tmp_path: Path,
) -> None:
    env = {
        **_base_env(airflow_home),
        "AIRFLOW_CONN_SECURE_SFTP_DEFAULT": asyncssh_server.conn_json(),
        "AIRFLOW_CONN_PARTNER_PGP": json.dumps(
            {"conn_type": "secure_pgp", "extra": {"public_keys": pgp_keys.public["bob"]}}
        ),
        "AIRFLOW_CONN_OUR_PGP": json.dumps(
            {
                "conn_type": "secure_pgp",
                "password": ALICE_PASSPHRASE,
                "extra": {"private_key": pgp_keys.secret["alice"]},
            }
        ),
        "PGP_EXAMPLE_DIR": asyncssh_server.writable_dir,
        "TMPDIR": str(tmp_path),
    }
    proc = _run([*_airflow(), "dags", "test", "encrypt_for_partner"], env)
    assert ALICE_PASSPHRASE not in proc.stdout + proc.stderr
    records = read_return_values(airflow_home, "encrypt_for_partner")["deliver_encrypted"]
    assert len(records) == 2
    for record in records:
        assert record["encrypted"] is True and record["remote_path"].endswith(".csv.pgp")
        landed = asyncssh_server.local_path(record["remote_path"])
        cli = pgp_keys.gpg("--status-fd", "2", "--decrypt", stdin=landed.read_bytes())
        assert cli.stdout == Path(record["local_path"]).read_bytes()
        assert f"VALIDSIG {pgp_keys.fpr['alice']}" in cli.stderr.decode()
    assert [p for p in tmp_path.iterdir() if p.name.startswith("airflow-secure-transfer-pgp")] == [] or all(
        not any(d.iterdir()) for d in tmp_path.glob("airflow-secure-transfer-pgp-*")
    )
