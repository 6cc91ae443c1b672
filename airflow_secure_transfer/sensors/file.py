"""``SecureFileSensor``: wait until a partner's files are complete on an FTPS or SFTP server.

Unlike a sensor that checks that a path exists, this one reports a file only once it stopped
changing (``stable_for``), once its done marker exists, and once a delivery manifest lists it
with its size, so a DAG never picks up a file its partner is still writing. Hidden names
(``.``-prefixed, which includes every temporary name this provider uploads to) never match.

Deferrable (``deferrable=True``, or Airflow's ``[operators] default_deferrable``): the wait runs in
the triggerer (:class:`~airflow_secure_transfer.triggers.file.SecureFileTrigger`) and frees the
worker slot. Otherwise the sensor pokes in ``poke`` or ``reschedule`` mode.

Importing this module is light (no ``asyncssh``, ``ftplib``, ``ssl`` from us); the constructor
checks its arguments and does no I/O.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from airflow_secure_transfer import exceptions
from airflow_secure_transfer.exceptions import SecureTransferError
from airflow_secure_transfer.transfer.watch import validate_watch_arguments

if TYPE_CHECKING:
    from airflow_secure_transfer.hooks.resolve import ResolvedConnection
    from airflow_secure_transfer.transfer.watch import CheckResult, Watcher

__all__ = ["SecureFileSensor"]


class SecureFileSensor(BaseSensorOperator):
    """Wait for complete files on an FTPS or SFTP server; return them as ``[{remote_path, size, mtime}]``.

    The list is ready for ``SecureDownloadOperator.partial(...).expand(remote_path=...)``.

    :param conn_id: an Airflow connection of type ``secure_ftps``/``ftp`` (always TLS) or
        ``secure_sftp``/``sftp``/``ssh`` (host key pinned). Templated.
    :param path: a remote file, or a pattern in its last component (fnmatch on the directory's
        listing, case-sensitive), e.g. ``"/outbox/sales-{{ ds }}-*.csv"``. Templated.
    :param min_files: how many matching files must be complete (default 1).
    :param stable_for: seconds a matched file's size and modification time must stay unchanged
        (default 30; 0: no wait). In ``reschedule`` mode each poke starts afresh, so a poke that
        sees a candidate waits up to this long itself before it decides.
    :param done_marker: a remote path that must exist before matched files count, e.g.
        ``"{path}.done"`` (``{path}``: each matched file's path; a file counts once its own marker
        exists) or ``"/outbox/_SUCCESS"`` (one marker for all). Templated. Default ``None``.
    :param manifest: a remote delivery manifest (as ``SecureUploadOperator(manifest=...)`` writes):
        the sensor succeeds only when every file it lists is present with its size. Templated.
    :param deferrable: wait in the triggerer; ``None`` (default): Airflow's
        ``[operators] default_deferrable``.
    :param poke_interval: seconds between pokes (default 60).
    :param timeout: seconds before the sensor fails (default 6 hours).
    :param mode: ``"poke"`` (default) or ``"reschedule"`` (when not deferrable).
    :raises AirflowFailException: at once, for what a retry cannot fix: host key or certificate not
        trusted, a setting that weakens security, login refused, a bad connection, a hostile listing
        or manifest path. Transient errors (network, a manifest not yet complete) are logged and
        tried again until *timeout*.
    """

    template_fields: Sequence[str] = ("conn_id", "path", "done_marker", "manifest")
    ui_color = "#d6eaf8"

    def __init__(
        self,
        *,
        conn_id: str,
        path: str,
        min_files: int = 1,
        stable_for: float = 30,
        done_marker: str | None = None,
        manifest: str | None = None,
        deferrable: bool | None = None,
        poke_interval: float = 60,
        timeout: float = 6 * 3600,
        mode: str = "poke",
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, timeout=timeout, mode=mode, **kwargs)
        if not isinstance(conn_id, str) or not conn_id:
            raise exceptions.ConfigurationError(f"conn_id must be a non-empty string, got {conn_id!r}")
        validate_watch_arguments(
            path=path, min_files=min_files, stable_for=stable_for, done_marker=done_marker, manifest=manifest
        )
        if deferrable is not None and not isinstance(deferrable, bool):
            raise exceptions.ConfigurationError(f"deferrable must be True, False or None, got {deferrable!r}")
        if deferrable is None:
            from airflow_secure_transfer.compat import default_deferrable

            deferrable = default_deferrable()
        self.conn_id = conn_id
        self.path = path
        self.min_files = min_files
        self.stable_for = stable_for
        self.done_marker = done_marker
        self.manifest = manifest
        self.deferrable = deferrable
        self._resolved: ResolvedConnection | None = None
        self._watcher: Watcher | None = None
        self._matched: list[dict[str, object]] = []

    # ------------------------------------------------------------------ deferred

    def execute(self, context: Any) -> Any:
        """Defer to :class:`SecureFileTrigger` when deferrable, else poke (``BaseSensorOperator``)."""
        if not self.deferrable:
            return super().execute(context)
        from airflow_secure_transfer.triggers.file import SecureFileTrigger

        self.defer(
            trigger=SecureFileTrigger(
                conn_id=self.conn_id,
                path=self.path,
                min_files=self.min_files,
                stable_for=self.stable_for,
                done_marker=self.done_marker,
                manifest=self.manifest,
                poke_interval=self.poke_interval,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )
        return None  # pragma: no cover - defer() raises

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> list[dict[str, object]]:
        """Resume after the trigger fired: return its files, or fail with the error it reported."""
        if isinstance(event, dict) and event.get("status") == "success" and isinstance(event.get("files"), list):
            files: list[dict[str, object]] = event["files"]
            self.log.info("%d file(s) ready: %s", len(files), ", ".join(str(f.get("remote_path")) for f in files[:10]))
            self._matched = files
            return files
        name = str(event.get("error_class")) if isinstance(event, dict) else "SecureTransferError"
        message = str(event.get("message")) if isinstance(event, dict) else f"unexpected trigger event {event!r}"
        raise _fail(_rebuild(name, message))

    # ------------------------------------------------------------------ poke

    def _watch(self) -> tuple[ResolvedConnection, Watcher]:
        if self._resolved is None or self._watcher is None:
            from airflow_secure_transfer.hooks.resolve import resolve_connection
            from airflow_secure_transfer.transfer.watch import watcher_for

            self._resolved = resolve_connection(self.conn_id, consumer="SecureFileSensor")
            self._watcher = watcher_for(self, self._resolved.remote_root)
        return self._resolved, self._watcher

    def _check(self) -> CheckResult:
        from airflow_secure_transfer.transfer.watch import BlockingRemote, run_inline

        resolved, watcher = self._watch()
        with resolved.connect() as fs:
            remote = BlockingRemote(fs, offload=False)
            result = run_inline(watcher.check(remote, time.monotonic()))
            if not result.done and self.reschedule and result.stable_in is not None:
                # The next poke is a new process that remembers nothing: watch the candidates here.
                self.log.info("%s: watching %s for %.0f s", self.path, result.waiting_for, result.stable_in)
                time.sleep(result.stable_in + 0.05)
                result = run_inline(watcher.check(remote, time.monotonic()))
        return result

    def poke(self, context: Any) -> PokeReturnValue | bool:
        """Look once; done -> the files (XCom). Transient errors are logged (the next poke tries again)."""
        try:
            result = self._check()
        except SecureTransferError as exc:
            if exc.retryable:
                self.log.warning("%s: %s: %s; trying again at the next poke", self.path, type(exc).__name__, exc)
                return False
            raise _fail(exc) from exc
        if not result.done:
            self.log.info("%s: waiting for %s", self.path, result.waiting_for)
            return False
        from airflow_secure_transfer.transfer.watch import file_records

        self.log.info("%s: %d file(s) ready", self.path, len(result.files))
        self._matched = file_records(result.files)
        return PokeReturnValue(is_done=True, xcom_value=self._matched)

    # ------------------------------------------------------------------ lineage

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """Return OpenLineage inputs: the matched files (``sftp://host:port`` / ``ftps://host:port`` + path).

        ``None`` when the OpenLineage provider is not installed. A deferred sensor resolves its
        connection here (host and port only; no network): its worker never looked it up.
        """
        from airflow_secure_transfer.lineage import operator_lineage
        from airflow_secure_transfer.operators._common import remote_namespace

        paths = [str(f["remote_path"]) for f in self._matched if isinstance(f.get("remote_path"), str)]
        if not paths:
            return operator_lineage([], [], [], None, receipts_on="inputs")
        resolved = self._resolved
        if resolved is None:
            from airflow_secure_transfer.hooks.resolve import resolve_connection

            resolved = self._resolved = resolve_connection(self.conn_id, consumer="SecureFileSensor")
        namespace = remote_namespace(resolved.scheme, resolved.host, resolved.port)
        return operator_lineage([(namespace, path) for path in paths], [], [], None, receipts_on="inputs")


def _rebuild(name: str, message: str) -> SecureTransferError:
    """The trigger's error as this package's class (by name; an unknown name gives the base class)."""
    cls = getattr(exceptions, name, None) if name in exceptions.__all__ else None
    if not (isinstance(cls, type) and issubclass(cls, SecureTransferError)):
        cls = SecureTransferError
    try:
        return cls(message)
    except TypeError:  # a class with more required arguments
        return SecureTransferError(message)


def _fail(exc: SecureTransferError) -> Exception:
    """``AirflowFailException`` (no retries) whose cause is *exc*."""
    from airflow_secure_transfer.compat import airflow_fail_exception

    failure = airflow_fail_exception()(f"{type(exc).__name__}: {exc}")
    failure.__cause__ = exc
    return failure
