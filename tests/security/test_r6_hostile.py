"""R6 Hostile servers: malformed replies, silence, a drip of single bytes, endless replies.

Each attempt must end with a clean :class:`TransportError` (:class:`TransferTimeout` for silence and drips)
within ``conn_timeout`` plus a small margin, and leave no thread behind. The drip is the hard case: every
byte arrives well inside any per-read socket timeout (one byte every 0.3 s against ``conn_timeout`` 1.5 s),
so only a deadline on the whole reply ends it. The call runs in a helper thread bounded at a much longer
time, so that a client that hangs fails the test instead of hanging the suite (the hostile server's
shutdown then unblocks it).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from airflow_secure_transfer.exceptions import TransferTimeout, TransportError
from airflow_secure_transfer.security.policy import parse_ftps_settings, parse_sftp_settings
from airflow_secure_transfer.transfer.ftps import FTPSClient
from airflow_secure_transfer.transfer.sftp import SFTPClient
from tests.security.conftest import sftp_settings
from tests.security.tools import (
    ScriptServer,
    SilentSFTPServer,
    ftp_script,
    leftover_threads,
    run_bounded,
    run_custom_sftp,
    ssh_script,
    thread_snapshot,
    tls_server_context,
)
from tests.servers.pki import ServerPKI
from tests.servers.sftp_asyncssh import ClientKeys

CONN_TIMEOUT = 1.5
#: "within conn_timeout plus a small margin"
MARGIN = 2.0
#: where a still-running call counts as hung (the test fails; it does not wait forever)
HANG = CONN_TIMEOUT + MARGIN + 3.0
TIMEOUT_KINDS = {"silent", "drip", "drip_banner"}


def _assert_clean(outcome: Any, before: set[int], how: str) -> None:
    assert not outcome.hung, f"{how}: the client still hung after {HANG:.0f} s"
    err = outcome.error
    assert err is not None, f"{how}: the client accepted a hostile server ({outcome.result!r})"
    assert isinstance(err, TransportError), f"{how}: {type(err).__name__}: {err}"
    if how in TIMEOUT_KINDS:
        assert isinstance(err, TransferTimeout), f"{how}: {type(err).__name__}: {err}"
    assert err.retryable
    assert outcome.seconds <= CONN_TIMEOUT + MARGIN, f"{how}: took {outcome.seconds:.1f} s"
    left = leftover_threads(before, ignore=[outcome.thread] if outcome.thread else [])
    assert not left, f"{how}: threads left behind: {left}"


def _victim_settings(parse: Callable[..., Any], conn_type: str, port: int, **extras: Any) -> Any:
    """Settings of the victim (a recognisable password) for the hostile server on *port*."""
    return parse(
        conn_type=conn_type,
        host="127.0.0.1",
        port=port,
        login="victim",
        password="Hostile-Victim-Pw-1",
        extras={"conn_timeout": CONN_TIMEOUT, **extras},
    )


def _ftps_settings(port: int, pki: ServerPKI, *, implicit: bool) -> Any:
    return _victim_settings(
        parse_ftps_settings,
        "secure_ftps",
        port,
        ca_bundle=pki.ca_pem,
        tls_mode="implicit" if implicit else "explicit",
    )


def _ftps_upload(settings: Any) -> Callable[[], Any]:
    def call() -> Any:
        with FTPSClient(settings) as client:
            return client.write_from("/upload.bin", io.BytesIO(b"x" * 100_000))

    return call


FTP_CASES = [
    # (where, how, implicit)
    *[("greeting", how, False) for how in ("silent", "drip", "endless", "garbage", "overlong", "binary", "bad_code")],
    *[("greeting", how, True) for how in ("silent", "drip", "endless", "garbage")],
    *[("USER", how, False) for how in ("silent", "drip", "endless", "garbage", "binary")],
    *[("EPSV", how, False) for how in ("silent", "drip", "garbage", "endless")],
    ("STOR", "silent", False),
    ("STOR", "drip", True),
]


@pytest.mark.parametrize(
    ("where", "how", "implicit"),
    FTP_CASES,
    ids=[f"{'implicit' if i else 'explicit'}-{w}-{h}" for w, h, i in FTP_CASES],
)
def test_hostile_ftps_server_ends_cleanly_in_time(test_pki: ServerPKI, where: str, how: str, implicit: bool) -> None:
    script = ftp_script(implicit=implicit, at=where, how=how)
    with ScriptServer(script, tls_context=tls_server_context(test_pki)) as server:
        settings = _ftps_settings(server.port, test_pki, implicit=implicit)
        before = thread_snapshot()
        outcome = run_bounded(_ftps_upload(settings), HANG)
        _assert_clean(outcome, before, how)


def test_implicit_port_answering_in_clear_is_a_transport_error(test_pki: ServerPKI) -> None:
    """A plain FTP greeting where a TLS ServerHello is due (wrong port or a stripping box)."""
    with ScriptServer(ftp_script(at="greeting", how="garbage")) as server:
        settings = _ftps_settings(server.port, test_pki, implicit=True)
        before = thread_snapshot()
        outcome = run_bounded(_ftps_upload(settings), HANG)
        _assert_clean(outcome, before, "garbage")


# ------------------------------------------------------------------------------- SSH


def _sftp_settings(port: int) -> Any:
    return _victim_settings(
        parse_sftp_settings,
        "secure_sftp",
        port,
        host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHfD1IBwYkGEsjNvaFSU3TQ8hunhgU1WNVJ8Xrm5Tzm6",
    )


@pytest.mark.parametrize(
    "how", ["silent", "drip_banner", "garbage_banner", "endless_prebanner", "garbage_after_banner", "huge_packet"]
)
def test_hostile_ssh_server_ends_cleanly_in_time(how: str) -> None:
    with ScriptServer(ssh_script(how)) as server:
        before = thread_snapshot()
        outcome = run_bounded(lambda: SFTPClient(_sftp_settings(server.port)), HANG)
        _assert_clean(outcome, before, how)


@pytest.mark.parametrize("operation", ["stat", "upload"])
def test_sftp_server_that_stops_answering_requests(client_keys: ClientKeys, tmp_path: Path, operation: str) -> None:
    with run_custom_sftp(tmp_path / "silent", client_keys, sftp_server=SilentSFTPServer) as server:
        settings = sftp_settings(server, conn_timeout=CONN_TIMEOUT)
        client = SFTPClient(settings)  # the session itself starts normally
        try:
            before = thread_snapshot()
            if operation == "stat":
                outcome = run_bounded(lambda: client.stat("/x"), HANG)
            else:
                outcome = run_bounded(lambda: client.write_from("/x", io.BytesIO(b"y" * 1000)), HANG)
            assert not outcome.hung
            assert isinstance(outcome.error, TransferTimeout), repr(outcome.error)
            assert outcome.seconds <= CONN_TIMEOUT + MARGIN
            assert not leftover_threads(before, ignore=[outcome.thread] if outcome.thread else [])
        finally:
            client.close()
    assert not leftover_threads(before), "the client's event-loop thread outlived close()"


# ------------------------------------------------------------------------------- the whole upload task


class _WriteNeverAnswered(asyncssh.SFTPServer):
    """Opens files, then never answers a WRITE (a server whose disk hangs)."""

    async def write(self, file_obj: object, offset: int, data: bytes) -> int:
        import asyncio

        await asyncio.Event().wait()
        raise AssertionError("unreachable")


@pytest.mark.parametrize("protocol", ["ftps", "sftp"])
def test_upload_against_a_server_that_goes_silent_mid_transfer_ends_in_time(
    protocol: str,
    client_keys: ClientKeys,
    relayed_ftps: Callable[..., Any],
    tmp_path: Path,
) -> None:
    """The upload engine as the operator runs it: the server stops answering in the middle of the data.
    The whole call -- timeout, clean-up, closing the connection -- must end within conn_timeout + margin."""
    from airflow_secure_transfer.transfer.engine import upload
    from tests.security.conftest import ftps_settings, write_random
    from tests.security.tools import Fault

    src = write_random(tmp_path / "payload.bin", 8 * 1024 * 1024)
    if protocol == "ftps":
        server, relay = relayed_ftps("explicit", record=False)
        settings: Any = ftps_settings(server, conn_timeout=CONN_TIMEOUT)

        def connect() -> Any:
            return FTPSClient(settings)

        relay.arm(Fault(1024 * 1024, "data", "stall", "c2s"))  # the server hears nothing more
        before = thread_snapshot()
        outcome = run_bounded(lambda: upload(connect, str(src), "/payload.bin"), HANG)
        _assert_clean(outcome, before, "silent")
        return
    with run_custom_sftp(tmp_path / "srv", client_keys, sftp_server=_WriteNeverAnswered) as sserver:
        ssettings = sftp_settings(sserver, conn_timeout=CONN_TIMEOUT)
        before = thread_snapshot()
        outcome = run_bounded(lambda: upload(lambda: SFTPClient(ssettings), str(src), "/payload.bin"), HANG)
        _assert_clean(outcome, before, "silent")
