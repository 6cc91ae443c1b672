"""How the benchmark runs *our* upload (the operator when it exists, else the engine call the operator makes)
and *our* download (``SecureDownloadOperator``).

Kept apart from the rest of the harness so that ``rss_child.py`` imports nothing the upload does not need.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def ours_uploader() -> tuple[str, Callable[..., Any]]:
    """Return (description, upload(conn_id, local, remote, max_connections=None, **options)).

    *options* are more operator/engine arguments (``verify="checksum"``).
    """
    try:
        from airflow_secure_transfer.operators.upload import SecureUploadOperator
    except ImportError:
        SecureUploadOperator = None

    if SecureUploadOperator is not None:
        return "SecureUploadOperator.execute(context={})", _via_operator(SecureUploadOperator, "local_path")

    from airflow_secure_transfer.hooks.ftps import SecureFTPSHook
    from airflow_secure_transfer.hooks.sftp import SecureSFTPHook
    from airflow_secure_transfer.security.policy import SFTP_CONN_TYPES
    from airflow_secure_transfer.transfer.engine import upload

    def via_engine(conn_id: str, local: Any, remote: str, max_connections: int | None = None, **options: Any) -> Any:
        sftp = SecureSFTPHook.get_connection(conn_id).conn_type in SFTP_CONN_TYPES
        hook: Any = SecureSFTPHook(conn_id) if sftp else SecureFTPSHook(conn_id)
        settings = hook.get_settings()
        return upload(
            hook.get_fs,
            local,
            remote,
            max_connections=max_connections or settings.max_connections,
            remote_root=settings.remote_root,
            **options,
        )

    return "transfer.engine.upload(hook.get_fs, ...) (operators/upload.py not present yet)", via_engine


def ours_downloader() -> tuple[str, Callable[..., Any]]:
    """Return (description, download(conn_id, remote, local, max_connections=None, **options)).

    Our download is measured through :class:`SecureDownloadOperator`, the code a task runs.
    """
    from airflow_secure_transfer.operators.download import SecureDownloadOperator

    return "SecureDownloadOperator.execute(context={})", _via_operator(SecureDownloadOperator, "remote_path")


def _via_operator(cls: Any, source: str) -> Callable[..., Any]:
    """``run(conn_id, source, target, max_connections=None, **options)``: one ``cls(...).execute(context={})``.

    *source* names the operator argument the first path goes to (``local_path`` for an upload,
    ``remote_path`` for a download); the second path goes to the other one.
    """
    target = "remote_path" if source == "local_path" else "local_path"

    def run(conn_id: str, src: Any, dst: Any, max_connections: int | None = None, **options: Any) -> Any:
        op = cls(task_id="bench_transfer", conn_id=conn_id, max_connections=max_connections,
                 **{source: src, target: dst}, **options)  # fmt: skip
        return op.execute(context={})

    return run
