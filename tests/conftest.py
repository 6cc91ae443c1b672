"""Test fixtures: real FTPS/SFTP servers on loopback (see ``tests/servers/__init__.py``).

Server fixtures (each returns a per-test view with a fresh empty ``writable_dir``):

* ``pyftpd_explicit``, ``pyftpd_implicit`` (HASH/XSHA256 on), ``pyftpd_explicit_nohash``
  -> :class:`tests.servers.FTPSServer`, kind ``pyftpdlib``
* ``asyncssh_server`` -> :class:`tests.servers.SFTPServer`, kind ``asyncssh``
* interop (the tests using them get the ``interop`` marker automatically; skipped when vsftpd/sshd or root are
  missing, *failed* under ``CI=true``): ``vsftpd_explicit``, ``vsftpd_explicit_tls12``, ``vsftpd_implicit``
  -> ``FTPSServer`` kind ``vsftpd``; ``sshd_server`` -> ``SFTPServer`` kind ``openssh``
* parametrized: ``ftps_server`` (all FTPS servers above except ``pyftpd_explicit_nohash``),
  ``sftp_server`` (asyncssh, sshd), ``any_server`` (all of them)

Other fixtures: ``test_pki`` (the session CA and server certificate, :class:`tests.servers.pki.ServerPKI`),
``client_keys`` (:class:`tests.servers.sftp_asyncssh.ClientKeys`), ``airflow_conn``, ``recording_proxy``, and
``pyftpd_factory`` / ``asyncssh_factory`` (private servers with non-default options for negative tests: plain
FTP without AUTH TLS, PROT P refused, TLS 1.2 cap, another CA or certificate, a new host key).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # make ``tests.servers`` importable however pytest is started
    sys.path.insert(0, str(_ROOT))

from tests.servers import STARTUP_TIMES, FTPSServer, SFTPServer, ci_required  # noqa: E402
from tests.servers.pki import ServerPKI, make_pki  # noqa: E402
from tests.servers.proxy import RecordingProxy  # noqa: E402
from tests.servers.pyftpd import run_pyftpd  # noqa: E402
from tests.servers.sftp_asyncssh import ClientKeys, make_client_keys, run_asyncssh  # noqa: E402

_S = TypeVar("_S", FTPSServer, SFTPServer)
INTEROP_FIXTURES = frozenset({"vsftpd_explicit", "vsftpd_explicit_tls12", "vsftpd_implicit", "sshd_server"})
FTPS_FIXTURES = ["pyftpd_explicit", "pyftpd_implicit", "vsftpd_explicit", "vsftpd_explicit_tls12", "vsftpd_implicit"]
SFTP_FIXTURES = ["asyncssh_server", "sshd_server"]


def _params(names: list[str]) -> list[Any]:
    return [pytest.param(n, id=n, marks=[pytest.mark.interop] if n in INTEROP_FIXTURES else []) for n in names]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A test that uses an interop server directly is an interop test (so ``-m "not interop"`` deselects it).
    for item in items:
        if INTEROP_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.interop)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if STARTUP_TIMES:
        terminalreporter.write_sep("-", "test server start-up times")
        for name, secs in sorted(STARTUP_TIMES.items()):
            terminalreporter.write_line(f"{name:24s} {secs * 1000:8.1f} ms")


# --------------------------------------------------------------------------- session resources


@pytest.fixture(scope="session")
def servers_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("servers")


@pytest.fixture(scope="session")
def test_pki(servers_base: Path) -> ServerPKI:
    """The session's throwaway CA and the FTPS servers' certificate (SANs localhost, 127.0.0.1)."""
    return make_pki(servers_base / "pki")


@pytest.fixture(scope="session")
def client_keys(servers_base: Path) -> ClientKeys:
    """SSH client keys (unencrypted + passphrase-encrypted ed25519), authorized on every SFTP server."""
    return make_client_keys(servers_base / "client-keys")


def _view(server: _S, request: pytest.FixtureRequest) -> _S:
    if isinstance(server, FTPSServer):
        server.command_log.clear()
    else:
        server.auth_log.clear()
    return server.for_test(request.node.name)


# --------------------------------------------------------------------------- in-process servers


@pytest.fixture(scope="session")
def _pyftpd_explicit_session(servers_base: Path, test_pki: ServerPKI) -> Iterator[FTPSServer]:
    with run_pyftpd(servers_base / "pyftpd-explicit", test_pki, tls_mode="explicit", name="pyftpd_explicit") as s:
        STARTUP_TIMES["pyftpd_explicit"] = s.start_seconds
        yield s


@pytest.fixture(scope="session")
def _pyftpd_implicit_session(servers_base: Path, test_pki: ServerPKI) -> Iterator[FTPSServer]:
    with run_pyftpd(servers_base / "pyftpd-implicit", test_pki, tls_mode="implicit", name="pyftpd_implicit") as s:
        STARTUP_TIMES["pyftpd_implicit"] = s.start_seconds
        yield s


@pytest.fixture(scope="session")
def _pyftpd_nohash_session(servers_base: Path, test_pki: ServerPKI) -> Iterator[FTPSServer]:
    with run_pyftpd(
        servers_base / "pyftpd-nohash", test_pki, tls_mode="explicit", with_hash=False, name="pyftpd_explicit_nohash"
    ) as s:
        STARTUP_TIMES["pyftpd_explicit_nohash"] = s.start_seconds
        yield s


@pytest.fixture(scope="session")
def _asyncssh_session(servers_base: Path, client_keys: ClientKeys) -> Iterator[SFTPServer]:
    with run_asyncssh(servers_base / "asyncssh-root", client_keys, name="asyncssh_server") as s:
        STARTUP_TIMES["asyncssh_server"] = s.start_seconds
        yield s


@pytest.fixture
def pyftpd_explicit(_pyftpd_explicit_session: FTPSServer, request: pytest.FixtureRequest) -> FTPSServer:
    """pyftpdlib, explicit FTPS (AUTH TLS), HASH/XSHA256 available; a fresh writable dir for this test."""
    return _view(_pyftpd_explicit_session, request)


@pytest.fixture
def pyftpd_implicit(_pyftpd_implicit_session: FTPSServer, request: pytest.FixtureRequest) -> FTPSServer:
    """pyftpdlib, implicit FTPS (TLS from the first byte), HASH/XSHA256 available."""
    return _view(_pyftpd_implicit_session, request)


@pytest.fixture
def pyftpd_explicit_nohash(_pyftpd_nohash_session: FTPSServer, request: pytest.FixtureRequest) -> FTPSServer:
    """pyftpdlib, explicit FTPS, *without* any checksum command (HASH/XSHA256 -> 500, not in FEAT)."""
    return _view(_pyftpd_nohash_session, request)


@pytest.fixture
def asyncssh_server(_asyncssh_session: SFTPServer, request: pytest.FixtureRequest) -> SFTPServer:
    """asyncssh SFTP server chrooted to its root; password or either client key."""
    return _view(_asyncssh_session, request)


@pytest.fixture
def pyftpd_factory(tmp_path: Path, test_pki: ServerPKI) -> Iterator[Callable[..., FTPSServer]]:
    """Return ``start(**options) -> FTPSServer``: a private pyftpdlib server for this test, stopped afterwards.

    Options are those of :func:`tests.servers.pyftpd.run_pyftpd` (``tls_mode``, ``with_hash``,
    ``require_session_reuse``, ``offer_tls=False`` for a plain-FTP server, ``allow_prot_p=False``,
    ``max_tls_version="TLSv1.2"``) plus ``pki`` (default: the session's; e.g. ``make_pki(dir, identities=
    ("localhost",))`` for a certificate without the IP SAN, or another CA for an untrusted one).
    """
    with contextlib.ExitStack() as stack:
        count = 0

        def start(*, pki: ServerPKI | None = None, **options: Any) -> FTPSServer:
            nonlocal count
            count += 1
            server = stack.enter_context(run_pyftpd(tmp_path / f"pyftpd-{count}", pki or test_pki, **options))
            return server.for_test("t")

        yield start


@pytest.fixture
def asyncssh_factory(tmp_path: Path, client_keys: ClientKeys) -> Iterator[Callable[..., SFTPServer]]:
    """Return ``start(**options) -> SFTPServer``: a private asyncssh server (its own new host key) for this test."""
    with contextlib.ExitStack() as stack:
        count = 0

        def start(**options: Any) -> SFTPServer:
            nonlocal count
            count += 1
            server = stack.enter_context(run_asyncssh(tmp_path / f"asyncssh-{count}", client_keys, **options))
            return server.for_test("t")

        yield start


@pytest.fixture
def recording_proxy() -> Iterator[Callable[[str, int], RecordingProxy]]:
    """Return ``make(host, port) -> RecordingProxy``; every proxy made is closed after the test."""
    proxies: list[RecordingProxy] = []

    def make(host: str, port: int) -> RecordingProxy:
        proxy = RecordingProxy(host, port)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.close()


# --------------------------------------------------------------------------- interop servers


def _require_interop(*binaries: str) -> None:
    from tests.servers.interop import missing_prerequisites

    missing = missing_prerequisites(*binaries)
    if missing:
        msg = "interop servers unavailable, missing: " + "; ".join(missing)
        if ci_required():
            pytest.fail(msg + " (CI=true: interop tests must run)", pytrace=False)
        pytest.skip(msg)


@pytest.fixture(scope="session")
def _interop_user() -> tuple[str, str]:
    from tests.servers.interop import ensure_test_user

    _require_interop()
    return ensure_test_user()


@pytest.fixture(scope="session")
def _interop_base(_interop_user: tuple[str, str]) -> Iterator[Path]:
    from tests.servers.interop import interop_base

    with interop_base() as base:
        yield base


def _vsftpd_session(name: str, base: Path, pki: ServerPKI, user: tuple[str, str], **kw: Any) -> Iterator[FTPSServer]:
    from tests.servers.interop import VSFTPD, run_vsftpd

    _require_interop(VSFTPD)
    with run_vsftpd(base, pki, login=user[0], password=user[1], name=name, **kw) as (s, _proc):
        STARTUP_TIMES[name] = s.start_seconds
        yield s


@pytest.fixture(scope="session")
def _vsftpd_explicit_session(
    _interop_base: Path, test_pki: ServerPKI, _interop_user: tuple[str, str]
) -> Iterator[FTPSServer]:
    yield from _vsftpd_session("vsftpd_explicit", _interop_base, test_pki, _interop_user)


@pytest.fixture(scope="session")
def _vsftpd_tls12_session(
    _interop_base: Path, test_pki: ServerPKI, _interop_user: tuple[str, str]
) -> Iterator[FTPSServer]:
    yield from _vsftpd_session("vsftpd_explicit_tls12", _interop_base, test_pki, _interop_user, tls12=True)


@pytest.fixture(scope="session")
def _vsftpd_implicit_session(
    _interop_base: Path, test_pki: ServerPKI, _interop_user: tuple[str, str]
) -> Iterator[FTPSServer]:
    yield from _vsftpd_session("vsftpd_implicit", _interop_base, test_pki, _interop_user, implicit=True)


@pytest.fixture(scope="session")
def _sshd_session(_interop_base: Path, client_keys: ClientKeys, _interop_user: tuple[str, str]) -> Iterator[SFTPServer]:
    from tests.servers.interop import SSHD, run_sshd

    _require_interop(SSHD)
    with run_sshd(
        _interop_base, client_keys, login=_interop_user[0], password=_interop_user[1], name="sshd_server"
    ) as (s, _proc):
        STARTUP_TIMES["sshd_server"] = s.start_seconds
        yield s


@pytest.fixture
def vsftpd_explicit(_vsftpd_explicit_session: FTPSServer, request: pytest.FixtureRequest) -> FTPSServer:
    """vsftpd 3.0.3, explicit FTPS, ``require_ssl_reuse=YES``; writable dir under ``/upload``."""
    return _view(_vsftpd_explicit_session, request)


@pytest.fixture
def vsftpd_explicit_tls12(_vsftpd_tls12_session: FTPSServer, request: pytest.FixtureRequest) -> FTPSServer:
    """vsftpd explicit FTPS capped at TLS 1.2 (``max_tls_version == "TLSv1.2"``)."""
    return _view(_vsftpd_tls12_session, request)


@pytest.fixture
def vsftpd_implicit(_vsftpd_implicit_session: FTPSServer, request: pytest.FixtureRequest) -> FTPSServer:
    """vsftpd implicit FTPS."""
    return _view(_vsftpd_implicit_session, request)


@pytest.fixture
def sshd_server(_sshd_session: SFTPServer, request: pytest.FixtureRequest) -> SFTPServer:
    """OpenSSH sshd, SFTP only (internal-sftp, chrooted); writable dir under ``/upload``."""
    return _view(_sshd_session, request)


# --------------------------------------------------------------------------- parametrized


@pytest.fixture(params=_params(FTPS_FIXTURES))
def ftps_server(request: pytest.FixtureRequest) -> FTPSServer:
    """Every FTPS server (pyftpdlib explicit/implicit, vsftpd explicit/TLS 1.2/implicit)."""
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


@pytest.fixture(params=_params(SFTP_FIXTURES))
def sftp_server(request: pytest.FixtureRequest) -> SFTPServer:
    """Every SFTP server (asyncssh, OpenSSH sshd)."""
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


@pytest.fixture(params=_params(FTPS_FIXTURES + SFTP_FIXTURES))
def any_server(request: pytest.FixtureRequest) -> FTPSServer | SFTPServer:
    """Every FTPS and SFTP server."""
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- Airflow


@pytest.fixture
def airflow_conn(monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """Return ``make(conn_id, server, conn_type=None, *, fields=None, **extra_overrides) -> conn_id``.

    ``make`` sets ``AIRFLOW_CONN_<CONN_ID>`` (via monkeypatch, undone after the test) to the JSON form of a
    connection to ``server`` that trusts exactly it (``ca_bundle`` PEM text + ``tls_mode`` for FTPS,
    ``host_key`` for SFTP). ``conn_type`` defaults to ``secure_ftps`` / ``secure_sftp``. ``extra_overrides`` add
    or replace extras; a value of None removes one (e.g. ``ca_bundle=None``). ``fields`` overrides top-level
    fields the same way (e.g. ``fields={"password": None}`` for a key-only SFTP connection).
    """

    def make(
        conn_id: str,
        server: FTPSServer | SFTPServer,
        conn_type: str | None = None,
        *,
        fields: dict[str, Any] | None = None,
        **extra_overrides: Any,
    ) -> str:
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{conn_id.upper()}", server.conn_json(conn_type, fields=fields, **extra_overrides)
        )
        return conn_id

    return make
