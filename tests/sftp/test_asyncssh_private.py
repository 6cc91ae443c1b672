"""The asyncssh private names we use still exist (fails on an asyncssh upgrade that removes or renames one),
and the small-file path works on asyncssh's public API alone.

Every private name is used through ``airflow_secure_transfer.transfer._asyncssh_private`` and listed in
its ``PRIVATE_NAMES``; no other module of the package touches one (checked on the source).
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import asyncssh
import pytest

from airflow_secure_transfer.transfer import _asyncssh_private as private
from airflow_secure_transfer.transfer.sftp import SFTPClient
from tests.contract._support import remote, settings_for
from tests.servers import SFTPServer

PACKAGE = Path(__file__).resolve().parents[2] / "airflow_secure_transfer"


def test_every_private_name_exists_on_a_live_session(sftp_server: SFTPServer) -> None:
    with SFTPClient(settings_for(sftp_server)) as client:
        conn = client._conn
        sftp = client.sftp
        objects = {
            "connection": conn,
            "sftp": sftp,
            "handler": private.sftp_handler(sftp),
            "channel": private.sftp_channel(sftp),
            "logger": asyncssh.logging.logger,
        }
        missing = []
        for kind, name in private.PRIVATE_NAMES:
            target = objects[kind]
            # A replaced attribute (coalesced transport, quiet logger) still exists: that is all we need.
            if target is None or not hasattr(target, name):
                missing.append(f"{kind}.{name}")
        assert missing == [], f"asyncssh {asyncssh.__version__} lacks {missing}: update _asyncssh_private"
        assert private.request_layer(sftp) is not None
        assert private.server_kexinit_payload(conn)[:1] == b"\x14"  # SSH_MSG_KEXINIT


def _private_attributes(tree: ast.AST) -> set[str]:
    """``x._name`` attribute reads/writes and ``getattr(x, "_name")`` calls in *tree* (not ``self._...``)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            base = node.value
            if isinstance(base, ast.Name) and base.id in ("self", "cls", "private"):
                continue
            found.add(node.attr)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and node.args[1].value.startswith("_")
        ):
            found.add(node.args[1].value)
    return found


def test_no_other_module_touches_an_asyncssh_private_name() -> None:
    names = {name for _, name in private.PRIVATE_NAMES if name.startswith("_")}
    offenders = {}
    for path in PACKAGE.rglob("*.py"):
        if path.name == "_asyncssh_private.py":
            continue
        used = _private_attributes(ast.parse(path.read_text())) & names
        if used:
            offenders[str(path.relative_to(PACKAGE))] = sorted(used)
    assert offenders == {}


def test_small_files_land_through_the_public_api_alone(
    asyncssh_server: SFTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the request layer (an asyncssh that renamed it), put_small_many uses open/write/utime/stat."""
    monkeypatch.setattr(private, "request_layer", lambda sftp: None)
    files = {f"p{i}.bin": os.urandom(i * 5000) for i in range(5)}
    with SFTPClient(settings_for(asyncssh_server)) as client:
        answers = client.put_small_many(
            [(remote(asyncssh_server, f".{n}.part"), remote(asyncssh_server, n), d) for n, d in files.items()],
            mtimes=[1_700_000_000] * len(files),
        )
    assert answers == [len(d) for d in files.values()]
    for name, data in files.items():
        landed = asyncssh_server.local_root / name
        assert landed.read_bytes() == data
        assert int(landed.stat().st_mtime) == 1_700_000_000
    assert not list(asyncssh_server.local_root.glob(".*.part"))


def test_small_files_are_read_through_the_public_api_alone(
    asyncssh_server: SFTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(private, "request_layer", lambda sftp: None)
    files = {f"r{i}.bin": os.urandom(i * 7000) for i in range(4)}
    for name, data in files.items():
        (asyncssh_server.local_root / name).write_bytes(data)
    with SFTPClient(settings_for(asyncssh_server)) as client:
        answers = client.get_small_many([(remote(asyncssh_server, n), len(d)) for n, d in files.items()])
    assert answers == list(files.values())
