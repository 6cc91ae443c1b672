"""The delivery manifest: built from upload records, parsed strictly as untrusted input."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from airflow_secure_transfer.exceptions import ConfigurationError, IntegrityError, RemotePathError
from airflow_secure_transfer.transfer import limits
from airflow_secure_transfer.transfer.base import TransferRecord
from airflow_secure_transfer.transfer.manifest import ManifestEntry, build_manifest, parse_manifest

DIGEST_A = "a" * 64
DIGEST_B = "0123456789abcdef" * 4


def _record(remote_path: str, size: int, sha256: str) -> TransferRecord:
    return TransferRecord(
        local_path="/tmp/x",
        remote_path=remote_path,
        bytes=size,
        sha256=sha256,
        seconds=0.1,
        resumed=False,
        skipped=False,
        verified="size",
        size=size,
    )


def _doc(**overrides: object) -> bytes:
    base: dict[str, object] = {
        "files": [{"path": "a.csv", "size": 3, "sha256": DIGEST_A}],
        "created": "2026-12-02T15:50:18Z",
        "producer": "test",
    }
    base.update(overrides)
    return json.dumps(base).encode()


def test_build_then_parse_round_trips_relative_paths() -> None:
    records = [_record("/in/2026/sub/b.csv", 10, DIGEST_B), _record("/in/2026/a.csv", 3, DIGEST_A)]
    when = datetime(2026, 12, 2, 15, 50, 18, 999, tzinfo=UTC)
    data = build_manifest(records, manifest_path="/in/2026/MANIFEST.json", producer="dag.task run", created=when)
    document = json.loads(data)
    assert list(document) == ["files", "created", "producer"]
    assert document["files"] == [
        {"path": "a.csv", "size": 3, "sha256": DIGEST_A},
        {"path": "sub/b.csv", "size": 10, "sha256": DIGEST_B},
    ]
    assert document["created"] == "2026-12-02T15:50:18Z"
    manifest = parse_manifest(data)
    assert dict(manifest.files) == {"a.csv": ManifestEntry(3, DIGEST_A), "sub/b.csv": ManifestEntry(10, DIGEST_B)}
    assert manifest.producer == "dag.task run"
    # Another account sees the same directory elsewhere: the entries follow the manifest.
    assert manifest.resolve("/outbox/MANIFEST.json") == {
        "/outbox/a.csv": ManifestEntry(3, DIGEST_A),
        "/outbox/sub/b.csv": ManifestEntry(10, DIGEST_B),
    }
    assert "2 files" in repr(manifest)


def test_build_refuses_files_outside_the_manifest_directory_and_bad_producer() -> None:
    with pytest.raises(ConfigurationError, match="not below /in/a"):
        build_manifest([_record("/in/b/x.csv", 1, DIGEST_A)], manifest_path="/in/a/M.json", producer="p")
    with pytest.raises(ConfigurationError, match="twice"):
        build_manifest(
            [_record("/in/x", 1, DIGEST_A), _record("/in/x", 1, DIGEST_A)], manifest_path="/in/M", producer="p"
        )
    with pytest.raises(ConfigurationError, match="SHA-256"):
        build_manifest([_record("/in/x", 1, "")], manifest_path="/in/M", producer="p")
    with pytest.raises(ConfigurationError, match="control"):
        build_manifest([], manifest_path="/in/M", producer="a\nb")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\xfe{}", "not UTF-8"),
        (b'{"files": [', "not JSON"),
        (b"[]", "not an object"),
        (_doc(extra=1), "unknown keys"),
        (_doc(files={"a": 1}), "not a list"),
        (_doc(files=[{"path": "a", "size": 1}]), "missing keys"),
        (_doc(files=[{"path": "a", "size": True, "sha256": DIGEST_A}]), "size"),
        (_doc(files=[{"path": "a", "size": -1, "sha256": DIGEST_A}]), "size"),
        (_doc(files=[{"path": "a", "size": 1.0, "sha256": DIGEST_A}]), "size"),
        (_doc(files=[{"path": "a", "size": 1, "sha256": DIGEST_A.upper()}]), "sha256"),
        (_doc(files=[{"path": "a", "size": 1, "sha256": DIGEST_A}] * 2), "listed twice"),
        (_doc(files=[{"path": "", "size": 1, "sha256": DIGEST_A}]), "non-empty"),
        (_doc(created="yesterday"), "ISO 8601"),
        (_doc(created=1), "created"),
        (_doc(producer="x\x1b[2J"), "producer"),
        (b'{"files": [], "files": [], "created": "2026-01-01", "producer": "p"}', "appears twice"),
        (b'{"files": [{"path": "a", "size": NaN, "sha256": "x"}], "created": "", "producer": ""}', "NaN"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
    ],
)
def test_parse_refuses_malformed_documents_with_integrity_error(data: bytes, message: str) -> None:
    with pytest.raises(IntegrityError, match=message):
        parse_manifest(data)


@pytest.mark.parametrize(
    "path", ["../etc/passwd", "a/../../b", "/etc/passwd", "a//b", "./a", "a\r\nDELE b", "..\\..\\x", "C:/x", "a/"]
)
def test_parse_refuses_unsafe_paths_with_remote_path_error(path: str) -> None:
    with pytest.raises(RemotePathError, match="manifest refused"):
        parse_manifest(_doc(files=[{"path": path, "size": 1, "sha256": DIGEST_A}]))


def test_parse_bounds_size_and_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MANIFEST_MAX_BYTES", 100)
    with pytest.raises(IntegrityError, match="more than the 100 allowed"):
        parse_manifest(b" " * 101)
    monkeypatch.setattr(limits, "MANIFEST_MAX_BYTES", 10_000)
    monkeypatch.setattr(limits, "MANIFEST_MAX_FILES", 2)
    files = [{"path": f"f{i}", "size": 1, "sha256": DIGEST_A} for i in range(3)]
    with pytest.raises(IntegrityError, match="3 files, more than the 2"):
        parse_manifest(_doc(files=files))
    assert len(parse_manifest(_doc(files=files[:2])).files) == 2


def test_resolve_keeps_entries_inside_remote_root() -> None:
    manifest = parse_manifest(_doc(files=[{"path": "deep/a", "size": 1, "sha256": DIGEST_A}]))
    assert list(manifest.resolve("M.json", remote_root="/jail")) == ["/jail/deep/a"]
    with pytest.raises(RemotePathError, match="outside remote_root"):
        manifest.resolve("/elsewhere/M.json", remote_root="/jail")
