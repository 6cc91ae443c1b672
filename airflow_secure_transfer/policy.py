"""Cluster policy: plain FTP (and SSH without host-key checks) refused or reported when a DAG is parsed.

Airflow calls :func:`task_policy` for every task of every DAG its DAG processor
parses. This distribution registers the module in the ``airflow.policy``
entry-point group, so installing the provider is enough. Where the package is
importable without being installed (no entry point), ``airflow_local_settings.py``
can re-export :func:`task_policy` instead (not both: each registration runs it).

The mode is Airflow's ``[secure_transfer] cluster_policy`` option
(``AIRFLOW__SECURE_TRANSFER__CLUSTER_POLICY``):

* ``off`` - nothing is checked;
* ``warn`` (the default) - every offending task is named in the DAG processor's log,
  so installing the provider never breaks a running deployment;
* ``enforce`` - :class:`~airflow.exceptions.AirflowClusterPolicyViolation` is raised:
  the DAG does not load and the UI shows the reason and the fix as an import error.

A value outside these three is logged as an error and treated as ``enforce``
(fail closed: it only affects DAGs that use plain FTP).

What is flagged, from the task object alone (no network, database or secrets
access: the DAG processor runs this for every file it parses):

* the stock plain-FTP classes and their subclasses, by class: ``FTPFileTransmitOperator``,
  ``FTPSensor`` (their FTPS variants are not flagged unless a subclass swaps the hook
  factory back), the Amazon provider's ``FTPToS3Operator`` and ``S3ToFTPOperator``;
* any task holding a stock ``FTPHook`` that is not an ``FTPSHook`` as an attribute;
* any task holding a stock ``SSHHook``/``SFTPHook`` (``SFTPOperator(sftp_hook=...)``,
  ``SSHOperator(ssh_hook=...)``) whose ``no_host_key_check`` or ``allow_host_key_change``
  is on.

Not visible here: connection extras of a connection that is only named
(``SSHOperator(ssh_conn_id=...)``, ``SFTPSensor``): reading them would need the metadata
database or a secrets backend. Code inside Python callables (``ftplib.FTP`` in a ``@task``)
is not visible either. Both are the ``airflow-secure-transfer audit`` command's job.
Tasks of this provider are never flagged.

Cost: the module imports only :mod:`pluggy` and the standard library, and detection
looks classes up by name in each task's MRO; provider modules are consulted only
through :data:`sys.modules`, never imported.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import pluggy

__all__ = [
    "DEFAULT_MODE",
    "MODES",
    "Violation",
    "cluster_policy_mode",
    "find_violation",
    "hookimpl",
    "task_policy",
]

#: The marker of Airflow's policy hooks: the same object as ``airflow.policies.hookimpl`` (project
#: "airflow.policy"), built here so that importing this module never imports Airflow. That matters when
#: this module is imported first: Airflow would load the entry point while this module is half-initialised
#: and register a module without ``task_policy``.
hookimpl = pluggy.HookimplMarker("airflow.policy")

SECTION = "secure_transfer"
OPTION = "cluster_policy"
MODES = ("off", "warn", "enforce")
DEFAULT_MODE = "warn"

log = logging.getLogger(__name__)

_OURS = "airflow_secure_transfer"
_FTP_HOOKS = "airflow.providers.ftp.hooks.ftp"
_SSH_HOOKS = "airflow.providers.ssh.hooks.ssh"
_FTPS_HOOK_NAMES = frozenset({"FTPSHook", "SecureFTPSHook"})
_AS_IS = "(the stock 'ftp' connection works unchanged with this provider, upgraded to TLS)"
_PIN = (
    "pin the server's key in the connection (extra 'host_key'; print it with 'airflow-secure-transfer "
    "fingerprint HOST:PORT --protocol sftp' and confirm it out of band)"
)


class Violation(NamedTuple):
    """One task that the policy refuses, with everything its message needs."""

    #: ``"dag_id.task_id"``.
    task: str
    #: The operator class's name.
    class_name: str
    #: The connection id the task names, or None when it cannot be known at parse time.
    conn_id: str | None
    #: What is wrong, e.g. "sends the password and the files in clear over plain FTP".
    problem: str
    #: ``"Old(...) -> New(...)"`` or an instruction.
    fix: str
    #: The matching rule of the audit command.
    rule: str
    #: The server, when the task names no connection (an SSH hook built with ``remote_host=`` only).
    host: str | None = None

    def message(self) -> str:
        """Describe the violation in one paragraph: task, class, connection, problem, fix."""
        if self.conn_id is not None:
            conn = f"connection {self.conn_id!r}"
        elif self.host:
            conn = f"no connection, host {self.host!r}"
        else:
            conn = "connection unknown at parse time"
        return (
            f"task {self.task!r} ({self.class_name}, {conn}) {self.problem}. Fix: {self.fix}. [audit rule {self.rule}]"
        )


class _Stock(NamedTuple):
    """What the policy knows about one stock class."""

    plain: bool
    conn_attr: str = "ftp_conn_id"
    #: The attribute that builds the hook; a subclass that overrides it decides the protocol.
    factory: str | None = None


_PLAIN_FTP_PROBLEM = "sends the password and the files in clear over plain FTP"

#: Stock classes by ``module.qualname``; the first one found in a task's MRO decides.
_STOCK: dict[str, _Stock] = {
    "airflow.providers.ftp.operators.ftp.FTPFileTransmitOperator": _Stock(plain=True, factory="hook"),
    "airflow.providers.ftp.operators.ftp.FTPSFileTransmitOperator": _Stock(plain=False, factory="hook"),
    "airflow.providers.ftp.sensors.ftp.FTPSensor": _Stock(plain=True, factory="_create_hook"),
    "airflow.providers.ftp.sensors.ftp.FTPSSensor": _Stock(plain=False, factory="_create_hook"),
    "airflow.providers.amazon.aws.transfers.ftp_to_s3.FTPToS3Operator": _Stock(plain=True),
    "airflow.providers.amazon.aws.transfers.s3_to_ftp.S3ToFTPOperator": _Stock(plain=True),
}


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _literal(value: str) -> str:
    """Write *value* as a double-quoted Python string literal."""
    return json.dumps(value, ensure_ascii=False)


def _conn_arg(conn_id: str | None) -> str:
    return _literal(conn_id) if conn_id is not None else "..."


def _download(hook_and_arg: str, conn: str) -> str:
    return f"a @task that calls {hook_and_arg}={conn}).retrieve_file(remote_path, local_path)"


def _ftp_fix(name: str, attr: str, conn_id: str | None, operation: object) -> str:
    """Return the replacement for a plain-FTP class, written as code."""
    conn = _conn_arg(conn_id)
    old = f"{name}({attr}={conn})"
    if name.endswith("Sensor"):
        new = f"a @task.sensor that calls SecureFTPSHook(ftps_conn_id={conn}).path_exists(path)"
    elif operation == "put" or name.startswith("S3To"):
        new = f"SecureUploadOperator(conn_id={conn}, local_path=..., remote_path=...)"
    else:
        new = _download("SecureFTPSHook(ftps_conn_id", conn)
    return f"{old} -> {new} {_AS_IS}"


def _declares_ftps(func: object) -> bool:
    """Say whether a hook factory (function or property) declares that it returns an FTPS hook."""
    target = getattr(func, "fget", None) or getattr(func, "func", None) or func
    annotations = getattr(target, "__annotations__", None)
    returned = annotations.get("return") if isinstance(annotations, dict) else None
    if isinstance(returned, type):
        ftp_hooks = sys.modules.get(_FTP_HOOKS)
        ftps_hook = getattr(ftp_hooks, "FTPSHook", None)
        if isinstance(ftps_hook, type) and issubclass(returned, ftps_hook):
            return True
        returned = returned.__name__
    return isinstance(returned, str) and returned.replace(" ", "").rsplit(".", 1)[-1] in _FTPS_HOOK_NAMES


def _task_name(task: Any) -> str:
    dag_id = getattr(task, "dag_id", None)
    task_id = getattr(task, "task_id", "?")
    return f"{dag_id}.{task_id}" if dag_id else str(task_id)


def _operator_class_and_args(task: Any) -> tuple[type, Mapping[str, Any]]:
    """Return the operator class and its arguments; a mapped task (``.partial().expand()``) has both apart."""
    operator_class = getattr(task, "operator_class", None)
    partial_kwargs = getattr(task, "partial_kwargs", None)
    if isinstance(operator_class, type) and isinstance(partial_kwargs, Mapping):
        return operator_class, partial_kwargs
    return type(task), vars(task) if hasattr(task, "__dict__") else {}


def _check_class(task: Any, cls: type, args: Mapping[str, Any]) -> Violation | None:
    mro = cls.__mro__
    for index, klass in enumerate(mro):
        stock = _STOCK.get(_qualified(klass))
        if stock is None:
            continue
        plain, problem = stock.plain, _PLAIN_FTP_PROBLEM
        # A more derived class than the stock one that defines the hook factory decides the protocol.
        owner = next((k for k in mro[:index] if stock.factory and stock.factory in vars(k)), None)
        if owner is not None and stock.factory:
            plain = not _declares_ftps(vars(owner)[stock.factory])
            problem = (
                f"overrides {stock.factory} without declaring an FTPSHook return type, so it is taken "
                "for plain FTP, which sends the password and the files in clear"
            )
        if not plain:
            return None
        conn_id = args.get(stock.conn_attr)
        conn_id = conn_id if isinstance(conn_id, str) else None
        base = klass.__name__
        return Violation(
            task=_task_name(task),
            class_name=cls.__name__,
            conn_id=conn_id,
            problem=problem,
            fix=_ftp_fix(base, stock.conn_attr, conn_id, args.get("operation")),
            rule="STX010",
        )
    return None


def _check_hooks(task: Any, cls: type, values: Iterable[object], operation: object) -> Violation | None:
    """Look at hook objects the task holds (``sftp_hook=``, ``ssh_hook=``): their settings are already resolved."""
    ftp = sys.modules.get(_FTP_HOOKS)
    ssh = sys.modules.get(_SSH_HOOKS)
    ftp_hook, ftps_hook = getattr(ftp, "FTPHook", None), getattr(ftp, "FTPSHook", None)
    ssh_hook = getattr(ssh, "SSHHook", None)
    if ftp_hook is None and ssh_hook is None:
        return None
    for value in values:
        if isinstance(ftp_hook, type) and isinstance(value, ftp_hook):
            if isinstance(ftps_hook, type) and isinstance(value, ftps_hook):
                continue
            conn_id = getattr(value, "ftp_conn_id", None)
            conn_id = conn_id if isinstance(conn_id, str) else None
            return Violation(
                task=_task_name(task),
                class_name=cls.__name__,
                conn_id=conn_id,
                problem=f"holds a stock FTPHook, which {_PLAIN_FTP_PROBLEM}",
                fix=f"FTPHook(ftp_conn_id={_conn_arg(conn_id)}) -> SecureFTPSHook(ftps_conn_id={_conn_arg(conn_id)}) "
                f"{_AS_IS}",
                rule="STX010",
            )
        if isinstance(ssh_hook, type) and isinstance(value, ssh_hook):
            switches = [name for name in ("no_host_key_check", "allow_host_key_change") if getattr(value, name, False)]
            if not switches:
                continue
            conn_id = getattr(value, "ssh_conn_id", None)
            conn_id = conn_id if isinstance(conn_id, str) else None
            what = " and ".join(f"{name}=True" for name in switches)
            if "SFTP" in cls.__name__:
                conn = _conn_arg(conn_id)
                new = (
                    f"SecureUploadOperator(conn_id={conn}, local_path=..., remote_path=...)"
                    if operation == "put"
                    else _download("SecureSFTPHook(sftp_conn_id", conn)
                )
                fix = f"{cls.__name__}(ssh_conn_id={conn}) -> {new}, and {_PIN}"
            else:
                fix = f"remove {what} and {_PIN}"
            return Violation(
                task=_task_name(task),
                class_name=cls.__name__,
                conn_id=conn_id,
                problem=f"uses an SSH hook with {what}: any server is trusted and a man in the middle gets the login",
                fix=fix,
                rule="STX031" if "no_host_key_check" in switches else "STX032",
                host=getattr(value, "remote_host", None) or None,
            )
    return None


def find_violation(task: Any) -> Violation | None:
    """Return why *task* is refused, or None; read the task object only (no I/O, no imports).

    :param task: an operator, a sensor or a mapped operator, as Airflow's ``task_policy`` receives it.
    """
    cls, args = _operator_class_and_args(task)
    if any(klass.__module__.partition(".")[0] == _OURS for klass in cls.__mro__):
        return None
    return _check_class(task, cls, args) or _check_hooks(task, cls, list(args.values()), args.get("operation"))


_reported_bad_modes: set[str] = set()


def cluster_policy_mode() -> tuple[str, str | None]:
    """Read ``[secure_transfer] cluster_policy``: return the mode and, for an invalid value, the problem.

    An invalid value is logged once per process and enforced (fail closed).
    """
    from airflow.configuration import conf

    raw = conf.get(SECTION, OPTION, fallback=DEFAULT_MODE)
    mode = str(raw).strip().lower() if raw is not None else DEFAULT_MODE
    if mode in MODES:
        return mode, None
    problem = (
        f"[{SECTION}] {OPTION} = {raw!r} is not one of {', '.join(MODES)} "
        f"(environment: AIRFLOW__{SECTION.upper()}__{OPTION.upper()}); enforcing"
    )
    if problem not in _reported_bad_modes:
        _reported_bad_modes.add(problem)
        log.error("airflow-secure-transfer cluster policy: %s", problem)
    return "enforce", problem


@hookimpl
def task_policy(task: Any) -> None:
    """Refuse (``enforce``) or report (``warn``) a task that would use plain FTP or skip SSH host-key checks.

    :param task: the task Airflow's DAG processor just loaded.
    :raises airflow.exceptions.AirflowClusterPolicyViolation: in ``enforce`` mode, for an offending task.
    """
    mode, config_problem = cluster_policy_mode()
    if mode == "off":
        return
    from airflow.exceptions import AirflowClusterPolicyViolation

    setting = config_problem or f"[{SECTION}] {OPTION} = enforce"
    try:
        violation = find_violation(task)
    except Exception as exc:  # a task shape this module does not know: never crash the DAG processor
        if mode == "warn":
            log.warning("airflow-secure-transfer cluster policy (warn): could not check a task", exc_info=True)
            return
        # enforce: fail closed, with the reason (Airflow would otherwise report a bare AirflowClusterPolicyError)
        raise AirflowClusterPolicyViolation(
            f"refused by the airflow-secure-transfer cluster policy ({setting}): task "
            f"{getattr(task, 'task_id', '?')!r} could not be checked ({type(exc).__name__}: {exc})"
        ) from exc
    if violation is None:
        return
    if mode == "warn":
        log.warning(
            "airflow-secure-transfer cluster policy (warn): %s Set [%s] %s = enforce to refuse such DAGs.",
            violation.message(),
            SECTION,
            OPTION,
        )
        return
    raise AirflowClusterPolicyViolation(
        f"refused by the airflow-secure-transfer cluster policy ({setting}): {violation.message()}"
    )
