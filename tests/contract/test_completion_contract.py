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


def _deliver(any_server: AnyServer, airflow_conn: Callable[..., str], tmp_path: Path) -> dict[str, bytes]:
    """The producer's side: three files and a manifest under ``day/``."""
    src = tmp_path / "produced"
    (src / "sub").mkdir(parents=True)
    payload = {"a.csv": b"a,b\n1,2\n", "big.bin": os.urandom(1_500_000), "sub/c.txt": b"c"}
    for rel, data in payload.items():
        (src / rel).write_bytes(data)
    SecureUploadOperator(
        task_id="produce",
        conn_id=airflow_conn("producer", any_server),
        local_path=str(src),
        remote_path=remote(any_server, "day/"),
        manifest=remote(any_server, "day", "MANIFEST.json"),
    ).execute(context={"run_id": "manual__1"})
    return payload


def test_consumer_proves_it_got_what_the_producer_sent(
    any_server: AnyServer, airflow_conn: Callable[..., str], tmp_path: Path
) -> None:
    from airflow_secure_transfer.operators.download import SecureDownloadOperator

    payload = _deliver(any_server, airflow_conn, tmp_path)
    records = SecureDownloadOperator(
        task_id="consume",
        conn_id=airflow_conn("consumer", any_server),
        remote_path=remote(any_server, "day"),
        local_path=str(tmp_path / "consumed"),
        manifest=remote(any_server, "day", "MANIFEST.json"),
    ).execute(context={})
    by_name = {os.path.relpath(r["local_path"], tmp_path / "consumed"): r for r in records}
    for rel, data in payload.items():
        assert (tmp_path / "consumed" / rel).read_bytes() == data
        assert by_name[rel]["verified"] == "checksum"  # proven by the producer's digest
    assert by_name["MANIFEST.json"]["verified"] == "size"  # the manifest itself is not in the manifest


def test_consumer_refuses_a_file_that_differs_from_the_manifest(
    any_server: AnyServer, airflow_conn: Callable[..., str], tmp_path: Path
) -> None:
    from airflow_secure_transfer.exceptions import IntegrityError
    from airflow_secure_transfer.transfer.download import download

    payload = _deliver(any_server, airflow_conn, tmp_path)
    tampered = any_server.local_root / "day" / "big.bin"
    data = bytearray(payload["big.bin"])
    data[777] ^= 0xFF  # same size, one byte changed after the manifest was written
    tampered.write_bytes(bytes(data))
    small = any_server.local_root / "day" / "a.csv"
    small.write_bytes(b"a,b\n1,3\n")  # a small file (read in a batch on SFTP) changed the same way
    with pytest.raises(IntegrityError, match="the manifest lists") as info:
        download(
            lambda: client_for(settings_for(any_server)),
            remote(any_server, "day"),
            str(tmp_path / "consumed"),
            manifest=remote(any_server, "day", "MANIFEST.json"),
        )
    assert "2 of 4 files failed" in "".join(getattr(info.value, "__notes__", []))
    assert not (tmp_path / "consumed" / "big.bin").exists() and not (tmp_path / "consumed" / "a.csv").exists()
    assert (tmp_path / "consumed" / "sub" / "c.txt").read_bytes() == b"c"
    assert leftovers(tmp_path / "consumed") == []


def test_consumer_refuses_a_delivery_missing_a_listed_file(
    any_server: AnyServer, airflow_conn: Callable[..., str], tmp_path: Path
) -> None:
    from airflow_secure_transfer.exceptions import IntegrityError
    from airflow_secure_transfer.transfer.download import download

    _deliver(any_server, airflow_conn, tmp_path)
    (any_server.local_root / "day" / "sub" / "c.txt").unlink()
    with pytest.raises(IntegrityError, match=r"lists 1 file\(s\) that remote_path does not hold: .*sub/c\.txt"):
        download(
            lambda: client_for(settings_for(any_server)),
            remote(any_server, "day"),
            str(tmp_path / "consumed"),
            manifest=remote(any_server, "day", "MANIFEST.json"),
        )
    assert not (tmp_path / "consumed").exists()
    with pytest.raises(IntegrityError, match="does not exist"):
        download(
            lambda: client_for(settings_for(any_server)),
            remote(any_server, "day"),
            str(tmp_path / "consumed"),
            manifest=remote(any_server, "day", "NOPE.json"),
        )
