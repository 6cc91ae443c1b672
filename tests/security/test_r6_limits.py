"""R6 Hostile servers, bounded: listings and replies that drip or flood (issue #12, item 5).

Every listing (FTPS ``MLSD``/``LIST``/``NLST``, SFTP ``readdir``) ends within ``conn_timeout`` as a whole
and within an entry and a byte cap; every FTP reply, multi-line ones included, within ``conn_timeout`` and
about 1 MiB. Past a bound: :class:`LimitExceededError` naming it. The assertions are on the bound that
was hit and on the memory the client used (``tracemalloc``), never on wall-clock time; each call runs in
a thread bounded at a generous ``HANG`` so that a client without the bound fails instead of hanging the
suite. The floods are finite (``flood_total``), so an unbounded client ends too (and fails the test).
The upload engine, where it listed a directory to save round trips, checks each file instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from airflow_secure_transfer.exceptions import LimitExceededError
from airflow_secure_transfer.security.policy import parse_ftps_settings
from airflow_secure_transfer.transfer import limits
from airflow_secure_transfer.transfer.engine import upload
from airflow_secure_transfer.transfer.ftps import FTPSClient
from airflow_secure_transfer.transfer.sftp import SFTPClient
from tests.security.conftest import sftp_settings
from tests.security.tools import ScriptServer, ftp_script, run_bounded, run_custom_sftp, tls_server_context
from tests.servers.hostile_ftp import run_hostile_ftp
from tests.servers.pki import ServerPKI
from tests.servers.pyftpd import run_pyftpd
from tests.servers.sftp_asyncssh import ClientKeys

CONN_TIMEOUT = 1.5
HANG = 20.0
MiB = 1024 * 1024


def _settings(port: int, pki: ServerPKI, *, implicit: bool = False, **extras: Any) -> Any:
    return parse_ftps_settings(
        conn_type="secure_ftps",
        host="127.0.0.1",
        port=port,
        login="victim",
        password="Hostile-Victim-Pw-1",
        extras={
            "conn_timeout": CONN_TIMEOUT,
            "ca_bundle": pki.ca_pem,
            "tls_mode": "implicit" if implicit else "explicit",
            **extras,
        },
    )


def _bounded_peak(fn: Callable[[], Any]) -> tuple[BaseException | None, int]:
    """Run *fn* (bounded at ``HANG``); return its error and the peak memory traced meanwhile (all threads)."""
    tracemalloc.start()
    try:
        outcome = run_bounded(fn, HANG)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert not outcome.hung, "the call never ended"
    return outcome.error, peak


@pytest.fixture
def small_caps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Caps small enough that a flood reaches them in a few milliseconds (the defaults are tested too)."""
    monkeypatch.setattr(limits, "LISTING_MAX_BYTES", 1 * MiB)
    monkeypatch.setattr(limits, "LISTING_MAX_ENTRIES", 5_000)


# ------------------------------------------------------------------------------- FTPS listings


def _list_and_noop(settings: Any) -> Callable[[], Any]:
    """List /in (expected to fail), then prove the control connection is still in step with a NOOP."""

    def call() -> Any:
        with FTPSClient(settings) as client:
            try:
                client.listdir("/in")
            except LimitExceededError as exc:
                client.noop()  # the server's 426 was read: the connection is still usable
                assert client.usable
                raise exc
            return "listed"

    return call


def test_ftps_listing_dripped_one_byte_at_a_time_ends_at_the_deadline(test_pki: ServerPKI) -> None:
    with run_hostile_ftp("tls", tls_context=tls_server_context(test_pki), listing_how="drip") as server:
        outcome = run_bounded(_list_and_noop(_settings(server.port, test_pki)), HANG)
        assert not outcome.hung, "the dripped listing never ended (no deadline on the whole listing)"
        assert isinstance(outcome.error, LimitExceededError), repr(outcome.error)
        assert outcome.error.limit == "conn_timeout"
        assert outcome.error.retryable
        assert "conn_timeout" in str(outcome.error) and "/in" in str(outcome.error)
        assert server.listing_sent > 0  # the server did drip (every byte within any per-read timeout)


@pytest.mark.parametrize(("how", "limit"), [("flood_bytes", "listing bytes"), ("flood_entries", "listing entries")])
def test_ftps_flooded_listing_stops_at_its_cap(test_pki: ServerPKI, small_caps: None, how: str, limit: str) -> None:
    with run_hostile_ftp("tls", tls_context=tls_server_context(test_pki), listing_how=how) as server:
        settings = _settings(server.port, test_pki)
        error, peak = _bounded_peak(_list_and_noop(settings))
        assert isinstance(error, LimitExceededError), repr(error)
        assert error.limit == limit
        assert server.listing_sent < server.flood_total, "the client read the whole flood"
        assert peak < 12 * MiB, f"the client held {peak / MiB:.1f} MiB for a 1 MiB / 5,000-entry cap"


@pytest.mark.parametrize("final", ["426", "226"])
def test_ftps_connection_stays_usable_after_an_abandoned_listing(
    test_pki: ServerPKI, small_caps: None, final: str
) -> None:
    """Whatever the server answers after the client closed the listing's data connection (``426``, or
    ``226`` when it had written everything already), the control connection is in step: no reconnect."""
    with run_hostile_ftp(
        "tls", tls_context=tls_server_context(test_pki), listing_how="flood_entries", listing_final=final
    ) as server:
        outcome = run_bounded(_list_and_noop(_settings(server.port, test_pki)), HANG)
        assert isinstance(outcome.error, LimitExceededError), repr(outcome.error)
        assert server.connections == 1


def test_ftps_listing_default_byte_cap(test_pki: ServerPKI) -> None:
    """The shipped cap (32 MiB), against a flood of 48 MiB."""
    with run_hostile_ftp(
        "tls", tls_context=tls_server_context(test_pki), listing_how="flood_bytes", flood_total=48 * MiB
    ) as server:
        outcome = run_bounded(_list_and_noop(_settings(server.port, test_pki, conn_timeout=15)), HANG)
        assert isinstance(outcome.error, LimitExceededError), repr(outcome.error)
        assert outcome.error.limit == "listing bytes"
        assert str(limits.LISTING_MAX_BYTES) in str(outcome.error)
        assert server.listing_sent < 48 * MiB


# ------------------------------------------------------------------------------- FTP replies


@pytest.mark.parametrize(
    ("at", "implicit"), [("greeting", False), ("greeting", True), ("FEAT", False), ("USER", False)]
)
def test_ftps_endless_multiline_reply_stops_at_one_mebibyte(test_pki: ServerPKI, at: str, implicit: bool) -> None:
    """An endless multi-line reply (220-, 211- FEAT, 200-...) ends at ``REPLY_MAX_BYTES``, not at the deadline
    after gigabytes (ftplib joins the lines of a multi-line reply in memory)."""
    script = ftp_script(implicit=implicit, at=at, how="endless")
    with ScriptServer(script, tls_context=tls_server_context(test_pki)) as server:
        settings = _settings(server.port, test_pki, implicit=implicit, conn_timeout=30)

        def connect() -> Any:
            with FTPSClient(settings):
                return "connected"

        error, peak = _bounded_peak(connect)
        assert isinstance(error, LimitExceededError), repr(error)
        assert error.limit == "reply bytes"
        assert str(limits.REPLY_MAX_BYTES) in str(error)
        assert peak < 12 * MiB, f"the client held {peak / MiB:.1f} MiB for a 1 MiB reply cap"


# ------------------------------------------------------------------------------- SFTP readdir


class _EndlessDirectory(asyncssh.SFTPServer):
    """``readdir`` of a directory named ``flood`` (or ``drip``) never ends; others are listed normally."""

    name_length = 40

    async def scandir(self, path: bytes) -> AsyncIterator[asyncssh.SFTPName]:  # type: ignore[override]
        if path.rstrip(b"/").endswith(b"/flood") or path.rstrip(b"/").endswith(b"/drip"):
            drip = path.rstrip(b"/").endswith(b"/drip")
            attrs = asyncssh.SFTPAttrs(permissions=0o100644, size=1)
            i = 0
            while True:
                if drip:
                    await asyncio.sleep(0.2)
                yield asyncssh.SFTPName(f"{i:08d}".encode().ljust(self.name_length, b"n"), attrs=attrs)
                i += 1
        async for name in super().scandir(path):  # type: ignore[attr-defined]
            yield name


class _LongNames(_EndlessDirectory):
    name_length = 250


@pytest.fixture
def endless_sftp(tmp_path: Path, client_keys: ClientKeys) -> Iterator[Callable[..., Any]]:
    with contextlib.ExitStack() as stack:

        def start(server_class: type[asyncssh.SFTPServer] = _EndlessDirectory) -> Any:
            return stack.enter_context(run_custom_sftp(tmp_path / "srv", client_keys, sftp_server=server_class))

        yield start


@pytest.mark.parametrize(
    ("directory", "server_class", "limit"),
    [
        ("flood", _EndlessDirectory, "listing entries"),
        ("flood", _LongNames, "listing bytes"),
        ("drip", _EndlessDirectory, "conn_timeout"),
    ],
)
def test_sftp_endless_readdir_stops_at_its_bound(
    endless_sftp: Callable[..., Any],
    small_caps: None,
    directory: str,
    server_class: type[asyncssh.SFTPServer],
    limit: str,
) -> None:
    server = endless_sftp(server_class)
    # A flood must meet its cap, not the deadline (tracemalloc slows asyncssh down several times).
    settings = sftp_settings(server, conn_timeout=CONN_TIMEOUT if directory == "drip" else 15)
    d = server.writable_dir.rstrip("/")
    server.local_path(f"{d}/{directory}").mkdir(parents=True)
    server.local_path(f"{d}/ok.txt").write_text("x")
    with SFTPClient(settings) as client:
        error, peak = _bounded_peak(lambda: client.listdir(f"{d}/{directory}"))
        assert isinstance(error, LimitExceededError), repr(error)
        assert error.limit == limit
        assert peak < 12 * MiB, f"the client held {peak / MiB:.1f} MiB"
        if directory != "drip":  # asyncssh's server answers one request at a time: it is still dripping
            entry = client.stat(f"{d}/ok.txt")  # the session is still usable
            assert entry is not None and entry.size == 1


# ------------------------------------------------------------------------------- the engine falls back


def _flooding_fs(total: int, sent: list[int]) -> type:
    """A pyftpdlib filesystem whose MLSD of a directory named ``flood`` adds *total* bytes of fake names."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from pyftpdlib.filesystems import AbstractedFS

    class FloodFS(AbstractedFS):  # type: ignore[misc]  # pyftpdlib is untyped
        def format_mlsx(self, basedir: str, listing: list[str], perms: str, facts: str, ignore_err: bool = True) -> Any:
            real = super().format_mlsx(basedir, listing, perms, facts, ignore_err)
            if not basedir.rstrip("/").endswith("flood"):
                return real

            def lines() -> Iterator[bytes]:
                yield from real
                i = 0
                while sent[0] < total:
                    line = f"type=file;size=1;modify=20240101000000; fake{i:09d}.txt\r\n".encode()
                    sent[0] += len(line)
                    i += 1
                    yield line

            return lines()

    return FloodFS


@pytest.mark.parametrize("protocol", ["ftps", "sftp"])
def test_engine_checks_each_file_when_the_listing_hits_a_bound(
    protocol: str,
    tmp_path: Path,
    test_pki: ServerPKI,
    endless_sftp: Callable[..., Any],
    small_caps: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Ten files into one directory make the engine list it once; the listing floods: every file is still
    uploaded, checked with one stat each, and the log says why."""
    source = tmp_path / "outbox"
    source.mkdir()
    for i in range(10):
        (source / f"f{i}.csv").write_bytes(b"%d\n" % i * 100)
    caplog.set_level(logging.WARNING, logger="airflow_secure_transfer.transfer.engine")
    if protocol == "ftps":
        sent = [0]
        root = tmp_path / "ftproot"
        (root / "flood").mkdir(parents=True)
        with run_pyftpd(root, test_pki, handler_attrs={"abstracted_fs": _flooding_fs(16 * MiB, sent)}) as server:
            from tests.contract._support import settings_for

            settings = settings_for(server)
            records = upload(lambda: FTPSClient(settings), str(source), "/flood/")
        landed = root / "flood"
        assert sent[0] < 16 * MiB, "the client read the whole flood"
    else:
        sserver = endless_sftp(_EndlessDirectory)
        d = sserver.writable_dir.rstrip("/")
        landed = sserver.local_path(f"{d}/flood")
        landed.mkdir(parents=True)
        ssettings = sftp_settings(sserver, conn_timeout=10)
        records = upload(lambda: SFTPClient(ssettings), str(source), f"{d}/flood/")
    assert len(records) == 10
    assert sorted(p.name for p in landed.iterdir() if not p.name.startswith(".")) == [f"f{i}.csv" for i in range(10)]
    for i in range(10):
        assert (landed / f"f{i}.csv").read_bytes() == b"%d\n" % i * 100
    warnings = [r.getMessage() for r in caplog.records if "checking each file instead" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "limit" in warnings[0]
