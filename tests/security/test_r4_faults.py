"""R4 Nothing lost under faults: 20 cut points over a 64 MiB upload.

The upload task (``SecureUploadOperator.execute``) runs through a :class:`~tests.security.tools.Relay` that
injects one fault when the client has sent N bytes of the file: the connection is closed, one direction is
half-closed (a FIN mid-stream: pyftpdlib then believes the upload is complete and answers ``226`` for a
truncated file), or one direction stalls (a black hole: nothing more is read, the client must time out).
For FTPS the fault hits the data connection or the control connection (the relay carries both); for SFTP
the one SSH connection. Both directions are cut in turn.

For each cut point:

* while both tries run, a watcher polls the final path on the server's disk: it may be absent, or the
  complete file, never anything else (the partial lives under a hidden temporary name);
* the first try either succeeds (the fault hit after the file was safe) or fails with a *retryable* error
  (so Airflow would retry it; ``AirflowFailException`` would be wrong);
* after a failure, a rerun of the task completes, resumes from the partial the first try left (``resumed``),
  and the final file's sha256 is the source's;
* all tries together send at most 1.5x the file size (client->server bytes counted on the wire, TLS/SSH
  framing included), and no temporary file is left.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_secure_transfer.exceptions import SecureTransferError
from tests.security.conftest import BIG, run_upload_task, sha256_file
from tests.security.tools import Fault, Relay
from tests.servers import FTPSServer, SFTPServer, settled_size

pytestmark = pytest.mark.slow

MiB = 1024 * 1024
CONN_TIMEOUT = 3

# (protocol, fault). FTPS: the trigger counts data-connection bytes; SFTP: SSH-connection bytes.
CUTS: list[tuple[str, Fault]] = [
    ("ftps-explicit", Fault(1 * MiB, "data")),
    ("ftps-explicit", Fault(17 * MiB, "data")),
    ("ftps-explicit", Fault(40 * MiB, "data")),
    ("ftps-explicit", Fault(BIG - MiB // 2, "data")),
    ("ftps-explicit", Fault(30 * MiB, "data", "half_close", "c2s")),
    ("ftps-explicit", Fault(50 * MiB, "data", "stall", "c2s")),
    ("ftps-explicit", Fault(BIG - 64 * 1024, "data", "stall", "s2c")),
    ("ftps-explicit", Fault(8 * MiB, "control")),
    ("ftps-explicit", Fault(33 * MiB, "control", "half_close", "c2s")),
    ("ftps-explicit", Fault(60 * MiB, "control", "stall", "s2c")),
    ("ftps-implicit", Fault(25 * MiB, "data")),
    ("ftps-implicit", Fault(45 * MiB, "control")),
    ("sftp", Fault(2 * MiB, "ssh", trigger="ssh")),
    ("sftp", Fault(24 * MiB, "ssh", trigger="ssh")),
    ("sftp", Fault(48 * MiB, "ssh", trigger="ssh")),
    ("sftp", Fault(BIG - MiB // 8, "ssh", trigger="ssh")),
    ("sftp", Fault(35 * MiB, "ssh", "half_close", "c2s", trigger="ssh")),
    ("sftp", Fault(12 * MiB, "ssh", "half_close", "s2c", trigger="ssh")),
    ("sftp", Fault(56 * MiB, "ssh", "stall", "c2s", trigger="ssh")),
    ("sftp", Fault(20 * MiB, "ssh", "stall", "s2c", trigger="ssh")),
]
assert len(CUTS) == 20


class FinalPathWatcher:
    """Poll the final path on the server's disk; record every state that is neither absent nor complete."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size
        self.violations: list[int] = []
        self.seen_complete = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="final-path-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                continue
            if st.st_size != self.size:
                self.violations.append(st.st_size)
            else:
                self.seen_complete = True

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def _partials(directory: Path) -> list[Path]:
    return [p for p in directory.glob(".*.part")] if directory.is_dir() else []


@pytest.mark.parametrize(("protocol", "fault"), CUTS, ids=[f"{p}-{f.describe()}".replace(" ", "_") for p, f in CUTS])
def test_cut_upload_never_leaves_a_partial_and_resumes(
    protocol: str,
    fault: Fault,
    relayed_ftps: Callable[..., tuple[FTPSServer, Relay]],
    relayed_sftp: Callable[..., tuple[SFTPServer, Relay]],
    airflow_conn: Callable[..., str],
    big_file: tuple[Path, str],
) -> None:
    from airflow_secure_transfer.compat import airflow_fail_exception

    AirflowFailException = airflow_fail_exception()  # the installed minor's class

    source, digest = big_file
    server: Any
    if protocol.startswith("ftps"):
        server, relay = relayed_ftps(protocol.split("-")[1], record=False)
    else:
        server, relay = relayed_sftp(record=False)
    conn_id = airflow_conn("r4", server, conn_timeout=CONN_TIMEOUT)
    remote = f"{server.writable_dir.rstrip('/')}/r4/payload.bin"
    final = server.local_path(remote)
    watcher = FinalPathWatcher(final, BIG)
    try:
        relay.arm(fault)
        first_error: BaseException | None = None
        try:
            run_upload_task(conn_id, source, remote)
        except Exception as exc:
            first_error = exc
        # (A first try that failed before the cut, e.g. a conn_timeout on a starved machine, shows here.)
        assert relay.fired.is_set(), f"the fault {fault.describe()} never fired; the first try: {first_error!r}"
        relay.arm(None)
        if first_error is not None:
            assert not isinstance(first_error, AirflowFailException), f"a cut must be retryable: {first_error}"
            assert isinstance(first_error, SecureTransferError) and first_error.retryable, repr(first_error)
            if final.exists():
                assert sha256_file(final) == digest
            # The server may still be applying what reached it before the cut: close what is left of the
            # first try's connections and read the partial once it stops changing.
            relay.kill_connections()
            left = _partials(final.parent)
            assert len(left) <= 1, left
            partial_size = settled_size(left[0]) if left else 0
            records = run_upload_task(conn_id, source, remote)
            (record,) = records
            assert record["sha256"] == digest and record["verified"]
            if 0 < partial_size < BIG:
                assert record["resumed"], f"the rerun did not resume the {partial_size}-byte partial"
                assert record["bytes"] == BIG - partial_size
    finally:
        watcher.stop()
    assert not watcher.violations, f"the final path held a partial file: sizes {sorted(set(watcher.violations))}"
    assert sha256_file(final) == digest
    assert _partials(final.parent) == [], "a temporary file was left behind"
    sent = relay.received(None, "c2s")
    assert sent <= 1.5 * BIG, f"the tries sent {sent / BIG:.2f}x the file size"


# ------------------------------------------------------------------------------- a tampered partial


@pytest.mark.parametrize("tls_mode", ["explicit"])
def test_tampered_partial_is_caught_by_checksum_verification(
    relayed_ftps: Callable[..., tuple[FTPSServer, Relay]],
    airflow_conn: Callable[..., str],
    tmp_path: Path,
    tls_mode: str,
) -> None:
    """Resume trusts the bytes already on the server. Someone who can write there (a co-tenant, a hostile
    server) could change the hidden partial between two tries; ``verify="checksum"`` must catch it and the
    final name must never hold the mixed file."""
    from tests.security.conftest import write_random

    server, relay = relayed_ftps(tls_mode)
    conn_id = airflow_conn("r4_tamper", server, conn_timeout=CONN_TIMEOUT)
    source = write_random(tmp_path / "ledger.bin", 4 * MiB)
    relay.arm(Fault(2 * MiB, "data"))
    with pytest.raises(SecureTransferError):
        run_upload_task(conn_id, source, "/in/ledger.bin", verify="checksum")
    relay.arm(None)
    (partial,) = _partials(server.local_root / "in")
    size = partial.stat().st_size
    assert 0 < size < 4 * MiB
    with open(partial, "r+b") as f:  # flip bytes inside the part already sent
        f.seek(size // 2)
        f.write(b"\x00TAMPERED\x00")
    with pytest.raises(SecureTransferError) as err:
        run_upload_task(conn_id, source, "/in/ledger.bin", verify="checksum")
    assert "sha" in str(err.value).lower() or "checksum" in str(err.value).lower()
    assert not (server.local_root / "in" / "ledger.bin").exists(), "a tampered file was renamed into place"
    (record,) = run_upload_task(conn_id, source, "/in/ledger.bin", verify="checksum")
    assert sha256_file(server.local_root / "in" / "ledger.bin") == sha256_file(source) == record["sha256"]
