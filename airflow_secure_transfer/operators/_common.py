"""What the transfer operators share: resolving the connection, counting connections, failing fast.

Imports nothing heavy at module level (the operators' modules are parsed by the scheduler).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from airflow_secure_transfer.exceptions import ConfigurationError, SecureTransferError

if TYPE_CHECKING:
    from airflow_secure_transfer.transfer.base import RemoteFS

__all__ = ["Endpoint", "check_flags", "fail_fast", "open_endpoint", "remote_namespace", "task_identity"]


@dataclass
class Endpoint:
    """A resolved connection, ready for the engine: a recording client factory and its limits."""

    scheme: str
    host: str
    port: int
    remote_root: str | None
    #: Connections the task may open (the operator's ``max_connections`` within the connection's cap and pool).
    connections: int
    #: Seconds the first connection may wait for a busy server in all.
    busy_wait: float
    _factory: Callable[[], RemoteFS] = field(repr=False)
    #: The first connection's ``session_security()``: negotiated algorithms and the verified identity.
    security: dict[str, str] | None = None

    def connect(self) -> RemoteFS:
        """Open a client; remember the first one's public security facts (for receipts)."""
        from airflow_secure_transfer.transfer.base import SupportsSessionSecurity

        fs = self._factory()
        if self.security is None and isinstance(fs, SupportsSessionSecurity):
            self.security = fs.session_security()  # every connection verifies the same identity
        return fs

    @property
    def namespace(self) -> str:
        """``scheme://host:port``: the namespace of the server's datasets."""
        return remote_namespace(self.scheme, self.host, self.port)


def remote_namespace(scheme: str, host: str, port: int) -> str:
    """``scheme://host:port`` (an IPv6 address in brackets)."""
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


def open_endpoint(operator: Any, consumer: str) -> Endpoint:
    """Resolve *operator*'s ``conn_id`` once and work out how many connections it may open.

    The operator's ``max_connections`` is capped by the connection's ``max_connections`` extra
    and, with ``server_pool``, by the pool slots the task holds.
    """
    from airflow_secure_transfer.hooks.resolve import resolve_connection
    from airflow_secure_transfer.transfer.backoff import BUSY_BUDGET_FACTOR

    resolved = resolve_connection(operator.conn_id, consumer=consumer)
    cap = resolved.max_connections
    wanted = operator.max_connections
    connections = cap if wanted is None else min(wanted, cap)
    if wanted is not None and wanted > cap:
        operator.log.info(
            "max_connections=%d is above the connection's limit of %d; using %d", wanted, cap, connections
        )
    if operator.server_pool is not None and connections > operator.pool_slots:
        # The pool's slots are the server's sessions: never hold more connections than slots.
        operator.log.info(
            "using %d connection(s): the task holds %d slot(s) of pool %r",
            operator.pool_slots,
            operator.pool_slots,
            operator.server_pool,
        )
        connections = operator.pool_slots
    return Endpoint(
        scheme=resolved.scheme,
        host=resolved.host,
        port=resolved.port,
        remote_root=resolved.remote_root,
        connections=connections,
        busy_wait=BUSY_BUDGET_FACTOR * resolved.conn_timeout,
        _factory=resolved.connect,
    )


def fail_fast(exc: SecureTransferError) -> NoReturn:
    """Raise *exc* when Airflow may retry it, else Airflow's fail-without-retry (from *exc*).

    Call it in the ``except`` block that caught *exc*.
    """
    if exc.retryable:
        raise exc
    from airflow_secure_transfer.compat import airflow_fail_exception

    # Not retryable (a wrong host key stays wrong): fail now, without Airflow retries.
    raise airflow_fail_exception()(f"{type(exc).__name__}: {exc}") from exc


def task_identity(operator: Any, context: Any, *target: object) -> str:
    """What makes a task try set and its target unique and stable across retries (staging directories).

    dag, task, run, map index, connection and *target* (paths); ``op.execute(context={})`` outside a
    DAG gives an empty dag id.
    """
    ctx = context if isinstance(context, dict) else {}
    ti = ctx.get("ti") or ctx.get("task_instance")
    dag_id = getattr(ti, "dag_id", None)
    if dag_id is None:
        try:
            dag_id = operator.dag_id
        except RuntimeError:  # not in a DAG
            dag_id = ""
    parts = [
        str(dag_id),
        str(getattr(ti, "task_id", None) or operator.task_id),
        str(getattr(ti, "run_id", None) or ctx.get("run_id") or ""),
        str(getattr(ti, "map_index", -1)),
        str(operator.conn_id),
        *(repr(t) if not isinstance(t, str) else t for t in target),
    ]
    return "|".join(parts)


def check_flags(**flags: object) -> None:
    """Refuse a flag that is not a real bool (``"false"`` from a template is truthy)."""
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise ConfigurationError(f"{name} must be True or False, got {value!r}")
