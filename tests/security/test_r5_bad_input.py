"""R5 Bad input: paths that escape, names that inject FTP commands, sources that are not files, odd
names and sizes, and servers that run out of room or refuse to write.

Each case must give a specific error class, a message that names the file, and leave no partial file
on the server (neither the final name nor a hidden ``.part``). Uploads go through the upload engine (what
the operator and the hooks call) against real servers: pyftpdlib behind the relay (its command log shows
what was sent) and asyncssh; "disk full" is a server whose storage fails after N bytes with the reply a
full disk or a quota gives (FTP ``452``/``552``, SFTP ``FX_FAILURE`` with no free blocks), and, where the
test may mount one, a real 1 MiB tmpfs under the SFTP server.
"""

from __future__ import annotations

import errno
import os
import subprocess
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from airflow_secure_transfer.exceptions import (
    LocalPathError,
    RemotePathError,
    RemoteStorageFullError,
)
from airflow_secure_transfer.transfer.engine import upload
from airflow_secure_transfer.transfer.ftps import FTPSClient
from airflow_secure_transfer.transfer.sftp import SFTPClient
from tests.security.conftest import ftps_settings, run_upload_task, sftp_settings, sha256_file, write_random
from tests.security.tools import (
    ReadOnlySFTPServer,
    Relay,
    can_mount_tmpfs,
    quota_sftp_server,
    run_bounded,
    run_custom_sftp,
)
from tests.servers import FTPSServer, SFTPServer
from tests.servers.sftp_asyncssh import ClientKeys

Protocol = str  # "ftps" | "sftp"


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


class Target:
    """One server, its connect function and what it recorded."""

    def __init__(self, server: FTPSServer | SFTPServer, connect: Callable[[], Any], relay: Relay | None = None):
        self.server = server
        self.connect = connect
        self.relay = relay

    @property
    def root(self) -> Path:
        return self.server.local_root

    def remote(self, path: str) -> str:
        return f"{self.server.writable_dir.rstrip('/')}/{path.lstrip('/')}"

    def commands(self) -> list[str]:
        return list(self.server.command_log) if isinstance(self.server, FTPSServer) else []


@pytest.fixture(params=["ftps", "sftp"])
def target(
    request: pytest.FixtureRequest,
    relayed_ftps: Callable[..., tuple[FTPSServer, Relay]],
    asyncssh_server: SFTPServer,
) -> Target:
    if request.param == "ftps":
        server, relay = relayed_ftps("explicit")
        st = ftps_settings(server)
        return Target(server, lambda: FTPSClient(st), relay)
    sst = sftp_settings(asyncssh_server)
    return Target(asyncssh_server, lambda: SFTPClient(sst))


def _names_file(exc: BaseException, *names: str) -> None:
    text = str(exc)
    assert any(n in text for n in names), f"the message does not name the file ({names}): {text}"


# ------------------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    "remote",
    ["../outside.csv", "../../etc/passwd", "sub/../../outside.csv", "/elsewhere/x.csv", "/jail/../x.csv"],
)
def test_dotdot_escaping_remote_root_is_refused_before_sending(target: Target, tmp_path: Path, remote: str) -> None:
    src = write_random(tmp_path / "data.csv", 1000)
    jail = target.remote("jail")
    before = target.commands()
    with pytest.raises(RemotePathError) as err:
        upload(target.connect, str(src), remote.replace("/jail", jail), remote_root=jail)
    _names_file(err.value, remote.split("/")[-1], remote)
    assert err.value.path is not None
    assert target.commands() == before, "something was sent for a refused path"
    assert _files(target.root) == []


@pytest.mark.parametrize("bad", ["a\r\nDELE victim.txt", "a\nDELE victim.txt", "a\rDELE victim.txt", "a\x00.txt"])
def test_cr_lf_nul_in_remote_names_are_refused(target: Target, tmp_path: Path, bad: str) -> None:
    victim = target.root / "victim.txt"
    victim.write_text("keep me")
    src = write_random(tmp_path / "data.csv", 1000)
    before = target.commands()
    with pytest.raises(RemotePathError) as err:
        upload(target.connect, str(src), target.remote(bad))
    assert any(lbl in str(err.value) for lbl in ("CR", "LF", "NUL")), str(err.value)
    assert victim.read_text() == "keep me"
    assert not any(c.upper().startswith("DELE") for c in target.commands())
    assert target.commands() == before
    assert _files(target.root) == ["victim.txt"]


@pytest.mark.parametrize("bad", ["evil\r\nDELE victim.txt", "evil\nRNFR victim.txt"])
def test_local_file_names_that_would_inject_commands_are_refused(target: Target, tmp_path: Path, bad: str) -> None:
    victim = target.root / "victim.txt"
    victim.write_text("keep me")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "fine.csv").write_text("ok")
    (tree / bad).write_text("payload")
    with pytest.raises(RemotePathError) as err:
        upload(target.connect, str(tree), target.remote("inbox/"))
    _names_file(err.value, repr(str(tree / bad)), str(tree / bad), "evil")
    assert victim.read_text() == "keep me"
    assert not any(c.upper().startswith(("DELE", "RNFR")) for c in target.commands())
    assert _files(target.root) == ["victim.txt"], "nothing may be uploaded when the plan has a bad name"


@pytest.mark.parametrize(
    "remote",
    ["jail/..\\..\\etc\\passwd", "jail/sub\\..\\..\\x.csv", "jail/C:\\Windows\\x.csv", "jail/C:/x.csv", "jail/c:x.csv"],
)
def test_backslash_and_drive_prefix_in_remote_paths_are_refused_before_sending(
    target: Target, tmp_path: Path, remote: str
) -> None:
    """``..\\..\\etc`` stays inside remote_root by POSIX rules but escapes it on a Windows server."""
    src = write_random(tmp_path / "data.csv", 1000)
    jail = target.remote("jail")
    before = target.commands()
    with pytest.raises(RemotePathError, match=r"backslash|drive prefix") as err:
        upload(target.connect, str(src), target.remote(remote), remote_root=jail)
    assert err.value.path is not None
    assert target.commands() == before, "something was sent for a refused path"
    assert _files(target.root) == []


@pytest.mark.parametrize("bad", ["..\\..\\evil.txt", "C:evil.txt", "esc\x1b[2Jname.txt", "tab\tname.txt"])
def test_local_file_names_that_escape_on_windows_or_carry_controls_are_refused(
    target: Target, tmp_path: Path, bad: str
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "fine.csv").write_text("ok")
    (tree / bad).write_text("payload")
    with pytest.raises(RemotePathError, match=r"backslash|drive prefix|control U"):
        upload(target.connect, str(tree), target.remote("inbox/"))
    assert _files(target.root) == [], "nothing may be uploaded when the plan has a bad name"


HOSTILE_ON_DISK = ["esc\x1b[2J\x1b[Hfake.txt", "tab\tname.txt", "bell\x07.txt", "..\\..\\win.ini", "C:evil.txt"]


def test_listed_names_pass_the_rules_for_names_sent(any_server: FTPSServer | SFTPServer) -> None:
    """Names a real server lists obey the rules for names we send (issue #12, items 9 and 10): a listing
    with a control character, a backslash or a drive prefix is refused as a whole, never returned."""
    from airflow_secure_transfer.security.paths import name_problem
    from tests.contract._support import client_for, settings_for

    base = any_server.writable_dir.rstrip("/")
    for i, name in enumerate(HOSTILE_ON_DISK):
        local = any_server.local_path(f"{base}/d{i}")
        local.mkdir(parents=True, exist_ok=True)
        (local / "fine.txt").write_text("ok")
        (local / name).write_text("x")
    refused = []
    with client_for(settings_for(any_server)) as fs:
        for i, name in enumerate(HOSTILE_ON_DISK):
            try:
                entries = fs.listdir(f"{base}/d{i}")
            except RemotePathError as exc:
                assert exc.path == f"{base}/d{i}"
                refused.append(name)
                continue
            # A server may mangle such a name itself (vsftpd prints "?"); what it lists must then be safe.
            unsafe = [e.path for e in entries if name_problem(e.path)]
            assert not unsafe, f"{any_server.name}: the listing returned {unsafe!r}"
    assert refused, f"{any_server.name} mangled every hostile name: the test proves nothing there"


def test_operator_applies_remote_root(
    relayed_ftps: Callable[..., tuple[FTPSServer, Relay]], airflow_conn: Callable[..., str], tmp_path: Path
) -> None:
    from airflow_secure_transfer.compat import airflow_fail_exception

    AirflowFailException = airflow_fail_exception()  # the installed minor's class

    server, relay = relayed_ftps("explicit")
    conn_id = airflow_conn("r5_root", server, remote_root="/jail")
    with pytest.raises(AirflowFailException) as err:
        run_upload_task(conn_id, write_random(tmp_path / "a.csv", 10), "../outside/a.csv")
    assert "outside" in str(err.value) or "outside" in str(err.value.__cause__)
    assert relay.count() == 0 or "STOR" not in " ".join(server.command_log)
    assert _files(server.local_root) == []


# ------------------------------------------------------------------------------- local sources


def test_missing_source_is_a_local_error_before_connecting(target: Target, tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "missing.csv"
    calls = []

    def connect() -> Any:
        calls.append(1)
        return target.connect()

    with pytest.raises(LocalPathError) as err:
        upload(connect, str(missing), target.remote("x.csv"))
    _names_file(err.value, str(missing))
    assert not err.value.retryable
    assert calls == [], "connected although the source does not exist"


def test_directory_given_where_a_file_is_expected(
    target: Target, tmp_path: Path, airflow_conn: Callable[..., str]
) -> None:
    """The hooks' ``store_file`` takes one file; a directory there is a local error, before connecting."""
    from airflow_secure_transfer.hooks.ftps import SecureFTPSHook
    from airflow_secure_transfer.hooks.sftp import SecureSFTPHook

    d = tmp_path / "a_directory"
    d.mkdir()
    conn_id = airflow_conn("r5_dir", target.server)
    hook: Any = SecureFTPSHook(conn_id) if isinstance(target.server, FTPSServer) else SecureSFTPHook(conn_id)
    with hook:
        with pytest.raises(LocalPathError) as err:
            hook.store_file(target.remote("x.csv"), str(d))
    _names_file(err.value, str(d))
    assert _files(target.root) == []


def test_remote_directory_where_the_file_should_land(target: Target, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "report.csv").write_text("data")
    (target.root / "inbox" / "report.csv").mkdir(parents=True)
    with pytest.raises(RemotePathError) as err:
        upload(target.connect, str(tree), target.remote("inbox/"))
    _names_file(err.value, "report.csv")
    assert _files(target.root) == []


@pytest.mark.parametrize("where", ["direct", "in_tree", "glob"])
def test_fifo_is_refused_without_blocking(target: Target, tmp_path: Path, where: str) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "fine.csv").write_text("ok")
    fifo = tree / "pipe.csv"
    os.mkfifo(fifo)
    source = {"direct": str(fifo), "in_tree": str(tree), "glob": str(tree / "*.csv")}[where]
    outcome = run_bounded(lambda: upload(target.connect, source, target.remote("inbox/")), 20)
    if outcome.hung:  # unblock the reader, then fail
        with open(fifo, "wb"):
            pass
        pytest.fail("the upload blocked on a FIFO")
    assert isinstance(outcome.error, LocalPathError), repr(outcome.error)
    _names_file(outcome.error, str(fifo))
    assert "FIFO" in str(outcome.error)
    assert _files(target.root) == []


# ------------------------------------------------------------------------------- odd names and sizes


UNICODE_NAMES = [
    "données-été.csv",  # NFC accents
    unicodedata.normalize("NFD", "Zoë-naïve.csv"),  # decomposed: must arrive byte for byte
    "数据-测试.bin",
    "🚀 rocket & co (1).txt",
    "مرحبا.txt",  # right-to-left
]


@pytest.mark.parametrize("name", UNICODE_NAMES, ids=range(len(UNICODE_NAMES)))
def test_unicode_names_arrive_byte_for_byte(target: Target, tmp_path: Path, name: str) -> None:
    src = write_random(tmp_path / name, 70_000)
    records = upload(target.connect, str(src), target.remote("inbox/"))
    assert [r.remote_path.rsplit("/", 1)[-1] for r in records] == [name]
    landed = target.root / "inbox" / name
    assert os.fsencode(landed.name) == name.encode("utf-8")
    assert sha256_file(landed) == sha256_file(src) == records[0].sha256
    assert _files(target.root) == [f"inbox/{name}"]


def test_empty_file_is_uploaded_and_verified(target: Target, tmp_path: Path) -> None:
    src = tmp_path / "empty.csv"
    src.write_bytes(b"")
    (record,) = upload(target.connect, str(src), target.remote("inbox/empty.csv"))
    assert record.bytes == 0 and record.verified
    assert (target.root / "inbox" / "empty.csv").stat().st_size == 0
    assert _files(target.root) == ["inbox/empty.csv"]


# ------------------------------------------------------------------------------- server refusals


@pytest.mark.parametrize(("err_no", "code"), [(errno.ENOSPC, "452"), (errno.EDQUOT, "552")], ids=["disk_full", "quota"])
def test_ftps_storage_full_leaves_no_partial(
    relayed_ftps: Callable[..., tuple[FTPSServer, Relay]], tmp_path: Path, err_no: int, code: str
) -> None:
    server, _ = relayed_ftps("explicit", quota=300_000, quota_errno=err_no)
    src = write_random(tmp_path / "big-report.bin", 2_000_000)
    with pytest.raises(RemoteStorageFullError) as err:
        upload(lambda: FTPSClient(ftps_settings(server)), str(src), "/inbox/big-report.bin")
    assert code in str(err.value)
    _names_file(err.value, "big-report.bin")
    assert _files(server.local_root) == [], "a partial file was left on the full server"


def test_ftps_permission_denied_leaves_no_partial(
    relayed_ftps: Callable[..., tuple[FTPSServer, Relay]], tmp_path: Path
) -> None:
    server, _ = relayed_ftps("explicit", perm="elr")
    (server.local_root / "inbox").mkdir()
    src = write_random(tmp_path / "report.csv", 5000)
    with pytest.raises(RemotePathError) as err:
        upload(lambda: FTPSClient(ftps_settings(server)), str(src), "/inbox/report.csv")
    assert not isinstance(err.value, RemoteStorageFullError)
    assert "550" in str(err.value)
    _names_file(err.value, "report.csv")
    assert not err.value.retryable
    assert _files(server.local_root) == []


@pytest.fixture
def custom_sftp(tmp_path: Path, client_keys: ClientKeys) -> Iterator[Callable[..., Any]]:
    import contextlib

    with contextlib.ExitStack() as stack:

        def make(**kw: Any) -> Any:
            return stack.enter_context(
                run_custom_sftp(tmp_path / f"sftp-{len(kw)}-{os.urandom(3).hex()}", client_keys, **kw)
            )

        yield make


def test_sftp_disk_full_leaves_no_partial(custom_sftp: Callable[..., Any], tmp_path: Path) -> None:
    server = custom_sftp(sftp_server=quota_sftp_server(300_000))
    src = write_random(tmp_path / "big-report.bin", 2_000_000)
    with pytest.raises(RemoteStorageFullError) as err:
        upload(lambda: SFTPClient(sftp_settings(server)), str(src), "/inbox/big-report.bin")
    _names_file(err.value, "big-report.bin")
    assert _files(server.local_root) == [], "a partial file was left on the full server"


def test_sftp_quota_leaves_no_partial(custom_sftp: Callable[..., Any], tmp_path: Path) -> None:
    """Quota, not a full disk: SFTP v3 (OpenSSH) says only FX_FAILURE and statvfs shows free space, so
    the client cannot call it "full"; it must still be a path error naming the file, with no partial."""
    cls = quota_sftp_server(300_000)
    cls.statvfs = asyncssh.SFTPServer.statvfs  # type: ignore[method-assign]  # the disk itself has room
    server = custom_sftp(sftp_server=cls)
    src = write_random(tmp_path / "big-report.bin", 2_000_000)
    with pytest.raises(RemotePathError) as err:
        upload(lambda: SFTPClient(sftp_settings(server)), str(src), "/inbox/big-report.bin")
    _names_file(err.value, "big-report.bin")
    assert _files(server.local_root) == [], "a partial file was left on the server"


def test_sftp_permission_denied_leaves_no_partial(custom_sftp: Callable[..., Any], tmp_path: Path) -> None:
    server = custom_sftp(sftp_server=ReadOnlySFTPServer)
    (server.local_root / "inbox").mkdir()
    src = write_random(tmp_path / "report.csv", 5000)
    with pytest.raises(RemotePathError) as err:
        upload(lambda: SFTPClient(sftp_settings(server)), str(src), "/inbox/report.csv")
    assert not isinstance(err.value, RemoteStorageFullError)
    assert "ermission denied" in str(err.value)
    _names_file(err.value, "report.csv")
    assert _files(server.local_root) == []


def test_sftp_real_full_disk_leaves_no_partial(client_keys: ClientKeys, tmp_path: Path) -> None:
    """A real 1 MiB tmpfs as the SFTP server's root: ENOSPC from the kernel, FX_FAILURE on the wire."""
    mnt = tmp_path / "tiny"
    if not can_mount_tmpfs(mnt):
        pytest.skip("cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN); the simulated full disk ran")
    try:
        with run_custom_sftp(mnt / "root", client_keys) as server:
            src = write_random(tmp_path / "big-report.bin", 3_000_000)
            with pytest.raises(RemoteStorageFullError) as err:
                upload(lambda: SFTPClient(sftp_settings(server)), str(src), "/big-report.bin")
            _names_file(err.value, "big-report.bin")
            assert _files(server.local_root) == [], "a partial file was left on the full disk"
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
