"""DAG for the R7 secrets test (tests/security/test_r7_secrets.py): succeeding and failing uploads.

Every connection comes from ``AIRFLOW_CONN_*`` variables set by the test; the local file from
``SECTEST_SOURCE``. Failing tasks: a wrong FTPS password, an FTPS server that echoes the password in its
530 reply, an SFTP server whose host key is not the pinned one, an encrypted SFTP key with a wrong
passphrase. The ``reprs`` task prints and returns (XCom) the repr of every hook, settings object and
client -- none of which may contain a secret.
"""

from __future__ import annotations

import datetime
import os

from airflow.sdk import dag, task

from airflow_secure_transfer.operators.upload import SecureUploadOperator

SOURCE = os.environ.get("SECTEST_SOURCE", "/nonexistent")
GOOD = ("sec_ftps_ok", "sec_sftp_password", "sec_sftp_key")
BAD = ("sec_ftps_bad_password", "sec_ftps_echo", "sec_sftp_wrong_host_key", "sec_sftp_wrong_passphrase")


# Retries are allowed: the failing tasks must still fail at once (AirflowFailException), not be retried.
@dag(
    dag_id="security_secrets",
    schedule=None,
    catchup=False,
    default_args={"retries": 2, "retry_delay": datetime.timedelta(seconds=1)},
    tags=["security"],
)
def security_secrets() -> None:
    for conn_id in GOOD + BAD:
        SecureUploadOperator(
            task_id=conn_id.removeprefix("sec_"),
            conn_id=conn_id,
            local_path=SOURCE,
            remote_path=os.environ.get(f"SECTEST_REMOTE_{conn_id.upper()}", "/r7/"),
        )

    @task
    def reprs() -> list[str]:
        from airflow_secure_transfer.hooks.ftps import SecureFTPSHook
        from airflow_secure_transfer.hooks.sftp import SecureSFTPHook

        out: list[str] = []
        for conn_id in ("sec_ftps_ok", "sec_ftps_bad_password"):
            hook = SecureFTPSHook(conn_id)
            settings = hook.get_settings()
            out += [repr(hook), repr(settings), str(settings)]
        for conn_id in ("sec_sftp_password", "sec_sftp_key", "sec_sftp_wrong_passphrase"):
            hook2 = SecureSFTPHook(conn_id)
            settings2 = hook2.get_settings()
            out += [repr(hook2), repr(settings2), str(settings2)]
        with SecureFTPSHook("sec_ftps_ok").get_fs() as ftps:
            out += [repr(ftps), ftps.tls_info.describe() if ftps.tls_info else ""]
        with SecureSFTPHook("sec_sftp_key").get_fs() as sftp:
            out += [repr(sftp), sftp.info.describe(), repr(sftp.info)]
        for line in out:
            print("REPR:", line)
        return out

    reprs()


security_secrets()
