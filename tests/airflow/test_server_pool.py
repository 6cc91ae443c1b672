"""``server_pool``: a pool per partner server bounds the connections of all tasks together (#17)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from airflow.sdk import DAG

from airflow_secure_transfer.exceptions import ConfigurationError
from airflow_secure_transfer.operators.upload import SecureUploadOperator
from tests.servers import SFTPServer, write_random


def _op(**kwargs: object) -> SecureUploadOperator:
    args: dict[str, object] = {"task_id": "up", "conn_id": "c", "local_path": "/tmp/x", "remote_path": "/in/"}
    args.update(kwargs)
    return SecureUploadOperator(**args)  # type: ignore[arg-type]


def test_server_pool_sets_the_pool_and_slots_from_max_connections() -> None:
    op = _op(server_pool="partner_a", max_connections=3)
    assert (op.pool, op.pool_slots, op.server_pool) == ("partner_a", 3, "partner_a")


def test_server_pool_without_max_connections_takes_the_default_four_slots() -> None:
    op = _op(server_pool="partner_a")
    assert (op.pool, op.pool_slots) == ("partner_a", 4)


def test_no_server_pool_leaves_pool_alone() -> None:
    op = _op(max_connections=3)
    assert op.pool == "default_pool" and op.pool_slots == 1 and op.server_pool is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"server_pool": "a", "pool": "b"}, "server_pool='a' and pool='b' disagree"),
        ({"server_pool": "a", "max_connections": 2, "pool_slots": 5}, "pool_slots=5 disagrees"),
        ({"server_pool": ""}, "server_pool must be a non-empty pool name"),
    ],
)
def test_contradicting_pool_arguments_fail_at_parse_time(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        _op(**kwargs)


def test_mapped_tasks_get_the_pool_before_any_init_runs() -> None:
    """The scheduler reads a mapped task's pool from partial(); server_pool must reach it there."""
    with DAG("pooled", schedule=None):
        mapped = SecureUploadOperator.partial(
            task_id="deliver", conn_id="c", remote_path="/in/", server_pool="partner_b", max_connections=2
        ).expand(local_path=["/tmp/a", "/tmp/b"])
    assert mapped.pool == "partner_b"
    assert mapped.pool_slots == 2


def test_execution_never_opens_more_connections_than_slots(
    airflow_conn: Callable[..., str], asyncssh_server: SFTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The connection allows 8, the task holds the default 4 slots of its server pool: it uses 4."""
    src = tmp_path / "many"
    src.mkdir()
    for i in range(12):
        write_random(src / f"f{i}.bin", 2_000)
    conn_id = airflow_conn("pooled", asyncssh_server, max_connections=8)
    op = SecureUploadOperator(
        task_id="up", conn_id=conn_id, local_path=str(src), remote_path=f"{asyncssh_server.writable_dir}/",
        server_pool="partner_c",
    )
    assert op.pool_slots == 4
    assert len(op.execute(context={})) == 12
    out = capsys.readouterr().out
    assert "using 4 connection(s): the task holds 4 slot(s) of pool 'partner_c'" in out
    assert "over up to 4 connection(s)" in out
