"""Encrypt a day's files to a partner's OpenPGP key, sign them with ours, and upload them over SFTP.

Connections (ids overridable through the environment):

* ``PGP_EXAMPLE_SFTP_CONN_ID`` (default ``secure_sftp_default``): the partner's ``secure_sftp`` server,
  host key pinned.
* ``PGP_EXAMPLE_PARTNER_PGP_CONN_ID`` (default ``partner_pgp``): a ``secure_pgp`` ("PGP keys")
  connection whose ``public_keys`` extra holds the partner's public key (the recipient).
* ``PGP_EXAMPLE_OUR_PGP_CONN_ID`` (default ``our_pgp``): a ``secure_pgp`` connection whose
  ``private_key`` extra holds our secret key, with its passphrase as the connection's password.

Remote directory: ``PGP_EXAMPLE_DIR`` (default ``/upload/encrypt_for_partner``). Each ``name.csv``
lands as ``name.csv.pgp``; the partner decrypts it with ``gpg --decrypt`` and sees our signature.
The records (XCom) say ``encrypted: true``, the plain file's ``sha256`` and the ciphertext's
``remote_sha256``. Plaintext never leaves the worker and no key touches its disk outside a private
temporary key store that is removed when the task ends.
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime
from pathlib import Path

from airflow.sdk import dag, task

from airflow_secure_transfer.operators.upload import SecureUploadOperator

SFTP_CONN_ID = os.environ.get("PGP_EXAMPLE_SFTP_CONN_ID", "secure_sftp_default")
PARTNER_PGP = os.environ.get("PGP_EXAMPLE_PARTNER_PGP_CONN_ID", "partner_pgp")
OUR_PGP = os.environ.get("PGP_EXAMPLE_OUR_PGP_CONN_ID", "our_pgp")
REMOTE_DIR = os.environ.get("PGP_EXAMPLE_DIR", "/upload/encrypt_for_partner").rstrip("/")


@dag(
    dag_id="encrypt_for_partner",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["secure-transfer", "pgp", "example"],
    doc_md=__doc__,
)
def encrypt_for_partner() -> None:
    @task
    def export_payroll() -> str:
        """Write today's files to a fresh local directory and return its path."""
        root = Path(tempfile.mkdtemp(prefix="payroll-"))
        for unit in ("north", "south"):
            rows = ["employee,gross,currency"] + [f"{unit}-{i},{3000 + i * 7}.00,EUR" for i in range(1, 50)]
            (root / f"payroll-{unit}.csv").write_text("\n".join(rows) + "\n")
        return str(root)

    exported = export_payroll()
    SecureUploadOperator(
        task_id="deliver_encrypted",
        conn_id=SFTP_CONN_ID,
        local_path=exported,
        remote_path=f"{REMOTE_DIR}/",
        encrypt_with=PARTNER_PGP,  # encrypted to every key in the partner's public_keys
        sign_with=OUR_PGP,  # signed inside the encrypted message with our private key
        armor=False,  # binary .pgp; True: ASCII-armoured .asc
        verify="checksum",  # the ciphertext on the server is compared with the ciphertext sent
    )


encrypt_for_partner()
