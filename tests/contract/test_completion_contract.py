"""The completion contract, upload side, on every server fixture: manifest, then done marker, after the files.

``SecureUploadOperator(manifest=..., done_marker=...)`` writes the manifest (atomically) once every file
is in place, and the empty marker last. The order is observed on the server's own disk at the moment
each of the two is written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest

from airflow_secure_transfer.hooks import _files
from airflow_secure_transfer.operators.upload import SecureUploadOperator
from airflow_secure_transfer.transfer.base import RemoteFS
from airflow_secure_transfer.transfer.manifest import read_manifest
from tests.servers import sha256_file

from ._support import AnyServer, client_for, leftovers, remote, settings_for


def test_manifest_lists_exactly_the_files_and_the_marker_comes_last(
    any_server: AnyServer, airflow_conn: Callable[..., str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "out"
    (src / "sub").mkdir(parents=True)
    payload = {"a.csv": b"a,b\n1,2\n", "b.bin": os.urandom(300_000), "sub/c.txt": b"", "sub/d.bin": os.urandom(5)}
    for rel, data in payload.items():
        (src / rel).write_bytes(data)
    delivery = any_server.local_root / "day"
    seen: list[tuple[str, list[str]]] = []  # (path written, files on the server's disk just before)
    real_put = _files.put_buffer

    def observed_put(client: RemoteFS, path: str, buffer: IO[bytes]) -> int:
        present = sorted(str(p.relative_to(any_server.local_root)) for p in any_server.local_root.rglob("*"))
        seen.append((path, present))
        return real_put(client, path, buffer)

    monkeypatch.setattr(_files, "put_buffer", observed_put)
    op = SecureUploadOperator(
        task_id="deliver",
        conn_id=airflow_conn("deliver", any_server),
        local_path=str(src),
        remote_path=remote(any_server, "day/"),
        manifest=remote(any_server, "day", "MANIFEST.json"),
        done_marker=remote(any_server, "_SUCCESS"),
    )
    records = op.execute(context={"run_id": "manual__1"})

    manifest_path, marker_path = remote(any_server, "day", "MANIFEST.json"), remote(any_server, "_SUCCESS")
    assert [path for path, _ in seen] == [manifest_path, marker_path]
    assert {f"day/{rel}" for rel in payload} <= set(seen[0][1])  # every file in place before the manifest
    assert "day/MANIFEST.json" not in seen[0][1]
    assert "day/MANIFEST.json" in seen[1][1] and "_SUCCESS" not in seen[1][1]  # the marker after the manifest
    assert (any_server.local_root / "_SUCCESS").read_bytes() == b""

    document = json.loads((delivery / "MANIFEST.json").read_bytes())
    assert document["producer"].endswith("deliver manual__1")
    assert sorted(document["files"], key=lambda f: f["path"]) == [
        {"path": rel, "size": len(data), "sha256": sha256_file(src / rel)} for rel, data in sorted(payload.items())
    ]
    assert {r["remote_path"] for r in records} == {remote(any_server, "day", rel) for rel in payload}
    assert leftovers(any_server.local_root) == []

    # The consumer's reader (bounded, strict) finds the same over the wire.
    with client_for(settings_for(any_server)) as fs:
        manifest = read_manifest(fs, manifest_path)
        assert read_manifest(fs, remote(any_server, "day", "nothing.json")) is None
    assert manifest is not None
    assert {path: (e.size, e.sha256) for path, e in manifest.resolve(manifest_path).items()} == {
        remote(any_server, "day", rel): (len(data), sha256_file(src / rel)) for rel, data in payload.items()
    }
