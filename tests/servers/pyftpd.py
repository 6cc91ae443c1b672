"""pyftpdlib FTPS servers (explicit and implicit TLS, optional HASH) in a background thread."""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from OpenSSL import SSL
from OpenSSL._util import lib as _ssl_lib

with warnings.catch_warnings():
    # pyftpdlib 2.x is built on asyncore/asynchat (deprecated in 3.11): not our code, not our warning.
    warnings.simplefilter("ignore", DeprecationWarning)
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import TLS_FTPHandler
    from pyftpdlib.handlers.ftp.control import FTPHandler
    from pyftpdlib.handlers.ftps.data import TLS_DTPHandler
    from pyftpdlib.ioloop import IOLoop
    from pyftpdlib.servers import FTPServer

from tests.servers import HOST, FTPSServer, wait_listening
from tests.servers.pki import ServerPKI

#: draft-bryan-ftpext-hash names -> hashlib names
HASH_ALGORITHMS = {"SHA-1": "sha1", "SHA-256": "sha256", "SHA-512": "sha512", "MD5": "md5"}
#: Like FileZilla Server, the algorithm in effect before ``OPTS HASH`` is SHA-1.
DEFAULT_HASH = "SHA-1"
#: proftpd mod_digest style commands: command -> hashlib name
X_COMMANDS = {"XSHA256": "sha256", "XSHA1": "sha1", "XSHA512": "sha512", "XMD5": "md5"}

_HASH_CMDS: dict[str, dict[str, Any]] = {
    "HASH": dict(perm="r", auth=True, arg=True, help="Syntax: HASH <SP> file-name (draft-bryan-ftpext-hash)."),
    **{
        name: dict(perm="r", auth=True, arg=True, help=f"Syntax: {name} <SP> file-name (checksum of a file).")
        for name in X_COMMANDS
    },
}


class ReuseRequiredDTPHandler(TLS_DTPHandler):  # type: ignore[misc]  # pyftpdlib is untyped
    """TLS data channel that requires session reuse and never cuts a handshake short.

    * Like vsftpd's ``require_ssl_reuse=YES``, a TLS session that is not a resumption of the control
      connection's is refused (``522``). Stock ``ftplib`` opens each data connection with a fresh session; a
      client must pass ``session=control_sock.session`` when wrapping the data socket.
    * Empty transfers (NLST of an empty directory) broke intermittently with stock pyftpdlib: the stdlib
      ``asynchat`` sends the empty chunk with ``send(b"")``, pyOpenSSL reports a zero-length ``SSL_write`` as
      ``SysCallError(-1, "Unexpected EOF")``, pyftpdlib takes that for a disconnect and closes the socket
      without ``close_notify`` while the client is still reading the session ticket
      (``SHUTDOWN_WHILE_IN_INIT`` on the client). Here an empty send is a no-op, and a close requested
      while the handshake is still running waits for it.
    """

    _close_when_established = False

    def send(self, data: bytes) -> int:
        if not data:
            return 0
        return int(super().send(data))

    def handle_close(self) -> None:
        if self._ssl_accepting and not self._closed:
            self._close_when_established = True
            return
        super().handle_close()

    def handle_ssl_established(self) -> None:
        if self.cmd_channel.require_session_reuse and not _ssl_lib.SSL_session_reused(self.socket._ssl):
            self.cmd_channel.session_reuse_failures.append(self.cmd_channel.last_transfer_cmd)
            self.cmd_channel.respond("522 SSL connection failed: session reuse required")
            self.close()
            return
        super().handle_ssl_established()
        if self._close_when_established:
            self.handle_close()


class SecureTestFTPHandler(TLS_FTPHandler):  # type: ignore[misc]  # pyftpdlib is untyped
    """TLS required on control and data; optional HASH/X* checksum commands; a command log."""

    tls_control_required = True
    tls_data_required = True
    with_hash: ClassVar[bool] = True
    require_session_reuse: ClassVar[bool] = True
    #: False: a plain FTP server (no AUTH/PBSZ/PROT, login in clear accepted) for negative tests.
    offer_tls: ClassVar[bool] = True
    #: False: PROT P is refused with 536 (a server that cannot protect the data channel).
    allow_prot_p: ClassVar[bool] = True
    command_log: ClassVar[list[str]]
    session_reuse_failures: ClassVar[list[str]]
    dtp_handler = ReuseRequiredDTPHandler
    last_transfer_cmd = ""
    proto_cmds = TLS_FTPHandler.proto_cmds.copy()

    def __init__(self, conn: Any, server: Any, ioloop: Any = None) -> None:
        super().__init__(conn, server, ioloop)
        if not self.connected:
            return
        self._hash_algo = DEFAULT_HASH
        self._extra_feats: list[str]
        if not self.offer_tls:
            self._extra_feats = [f for f in self._extra_feats if not f.startswith(("AUTH", "PBSZ", "PROT"))]
        if self.with_hash:
            self._extra_feats.append(self._hash_feat())
            self._extra_feats.extend(X_COMMANDS)

    def _hash_feat(self) -> str:
        return "HASH " + ";".join(n + ("*" if n == self._hash_algo else "") for n in HASH_ALGORITHMS)

    def ftp_FEAT(self, line: str) -> None:
        if self.with_hash:  # the '*' follows OPTS HASH
            self._extra_feats = [f for f in self._extra_feats if not f.startswith("HASH ")] + [self._hash_feat()]
        super().ftp_FEAT(line)

    def pre_process_command(self, line: str, cmd: str, arg: str) -> None:
        self.command_log.append(f"{cmd} ******" if cmd == "PASS" else line)
        self.last_transfer_cmd = line if cmd != "PASS" else self.last_transfer_cmd
        super().pre_process_command(line, cmd, arg)

    def ftp_OPTS(self, line: str) -> None:
        cmd, _, arg = line.partition(" ")
        if self.with_hash and cmd.upper() == "HASH":
            arg = arg.strip().upper()
            if not arg:
                self.respond(f"200 {self._hash_algo}")
            elif arg in HASH_ALGORITHMS:
                self._hash_algo = arg
                self.respond(f"200 {arg}")
            else:
                self.respond("501 Unknown algorithm, current selection not changed.")
            return
        super().ftp_OPTS(line)

    def ftp_PROT(self, line: str) -> None:
        if not self.allow_prot_p and line.strip().upper() == "P":
            self.respond("536 PROT P not supported by this server.")
            return
        super().ftp_PROT(line)

    def _digest(self, path: str, algo: str) -> tuple[str, int] | None:
        if not self.fs.isfile(self.fs.realpath(path)):
            self.respond(f"550 {self.fs.fs2ftp(path)} is not a regular file.")
            return None
        try:
            h = hashlib.new(algo)
            size = 0
            with self.run_as_current_user(self.fs.open, path, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
                    size += len(chunk)
        except OSError as err:
            self.respond(f"550 {err.strerror}.")
            return None
        return h.hexdigest(), size

    def ftp_HASH(self, path: str) -> None:
        result = self._digest(path, HASH_ALGORITHMS[self._hash_algo])
        if result is not None:
            digest, size = result
            self.respond(f"213 {self._hash_algo} 0-{size} {digest} {self.fs.fs2ftp(path)}")

    def _x_digest(self, path: str, cmd: str) -> None:
        result = self._digest(path, X_COMMANDS[cmd])
        if result is not None:
            self.respond(f"250 {result[0]}")

    def ftp_XSHA256(self, path: str) -> None:
        self._x_digest(path, "XSHA256")

    def ftp_XSHA1(self, path: str) -> None:
        self._x_digest(path, "XSHA1")

    def ftp_XSHA512(self, path: str) -> None:
        self._x_digest(path, "XSHA512")

    def ftp_XMD5(self, path: str) -> None:
        self._x_digest(path, "XMD5")


class ImplicitTLSHandler(SecureTestFTPHandler):
    """Implicit FTPS: TLS from the first byte; the 220 greeting is the first thing sent *inside* TLS."""

    _greeted = False

    def handle(self) -> None:
        # Called by FTPServer right after accept, instead of sending the greeting in clear.
        self.secure_connection(self.ssl_context)

    def handle_ssl_established(self) -> None:
        if not self._greeted:
            self._greeted = True
            FTPHandler.handle(self)  # on_connect() + "220 ..." greeting


def _ssl_context(pki: ServerPKI, max_tls_version: str | None = None) -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    if max_tls_version == "TLSv1.2":
        ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
    elif max_tls_version is not None:
        raise ValueError(f"max_tls_version must be None or 'TLSv1.2', got {max_tls_version!r}")
    ctx.use_certificate_chain_file(str(pki.cert_path))
    ctx.use_privatekey_file(str(pki.key_path))
    ctx.check_privatekey()
    ctx.set_options(SSL.OP_NO_COMPRESSION)
    # A session-id context lets data connections resume the control connection's session.
    ctx.set_session_id(b"sectransfer-pyftpd")
    return ctx


class PyFTPDThread:
    """A pyftpdlib server running in a daemon thread with its own IOLoop."""

    def __init__(self, server: FTPServer) -> None:
        self.server = server
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="pyftpd", daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                # one poll of at most 50 ms, then re-check the stop flag
                self.server.ioloop.loop(timeout=0.05, blocking=False)
        finally:
            self.server.close_all()
            self.server.ioloop.close()

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=10)
        if self.thread.is_alive():
            raise RuntimeError("pyftpdlib server thread did not stop")


@contextlib.contextmanager
def serve_pyftpd(
    handler: type[FTPHandler], host: str = HOST, server_attrs: Mapping[str, Any] | None = None
) -> Iterator[int]:
    """Run a pyftpdlib server with *handler* on ``host``, port 0, in its own thread; yield the port once it
    accepts connections; stop it on exit. *server_attrs* set ``FTPServer`` attributes (``max_cons_per_ip``)."""
    server = FTPServer((host, 0), handler, ioloop=IOLoop())
    for key, value in (server_attrs or {}).items():
        setattr(server, key, value)
    port = int(server.socket.getsockname()[1])
    runner = PyFTPDThread(server)
    runner.thread.name = f"pyftpd-{port}"
    runner.start()
    try:
        wait_listening(host, port, timeout=5, alive=runner.thread.is_alive)
        yield port
    finally:
        runner.stop()


@contextlib.contextmanager
def run_pyftpd(
    root: Path,
    pki: ServerPKI,
    *,
    tls_mode: str = "explicit",
    with_hash: bool = True,
    require_session_reuse: bool = True,
    offer_tls: bool = True,
    allow_prot_p: bool = True,
    max_tls_version: str | None = None,
    login: str = "ftpuser",
    password: str | None = None,
    name: str = "",
    host: str = HOST,
    perm: str = "elradfmwMT",
    passive_ports: Sequence[int] | None = None,
    handler_attrs: Mapping[str, Any] | None = None,
    server_attrs: Mapping[str, Any] | None = None,
) -> Iterator[FTPSServer]:
    """Start a pyftpdlib FTPS server rooted at ``root`` on ``host`` (127.0.0.1), port 0; stop it on exit.

    :param tls_mode: ``"explicit"`` (AUTH TLS) or ``"implicit"`` (TLS from the first byte).
    :param with_hash: offer HASH (draft-bryan-ftpext-hash) and XSHA256/XSHA1/XSHA512/XMD5.
    :param require_session_reuse: refuse data connections that do not resume the control TLS session (522),
        like vsftpd's ``require_ssl_reuse=YES``.
    :param offer_tls: False makes a *plain FTP* server (explicit mode only): AUTH is unknown (500), not in FEAT,
        and USER/PASS are accepted in clear -- for "server without AUTH TLS" tests (see ``command_log``).
    :param allow_prot_p: False answers ``PROT P`` with 536 -- for "server refusing PROT P" tests.
    :param max_tls_version: ``"TLSv1.2"`` caps the server at TLS 1.2.
    :param perm: pyftpdlib permissions of the user (``"elr"``: read-only, STOR -> ``550``).
    :param passive_ports: a fixed set of passive ports (default: ephemeral).
    :param handler_attrs: more (or other) handler class attributes, e.g. ``abstracted_fs``,
        ``dtp_handler``, ``timeout``, ``banner``.
    :param server_attrs: ``FTPServer`` attributes, e.g. ``max_cons_per_ip`` (a busy server answers ``421``).
    """
    if not offer_tls and tls_mode != "explicit":
        raise ValueError("offer_tls=False only makes sense with tls_mode='explicit'")
    t0 = time.monotonic()
    password = password or secrets.token_urlsafe(16)
    root.mkdir(parents=True, exist_ok=True)
    auth = DummyAuthorizer()
    auth.add_user(login, password, str(root), perm=perm)
    base = ImplicitTLSHandler if tls_mode == "implicit" else SecureTestFTPHandler
    cmds = dict(base.proto_cmds)
    if with_hash:
        cmds.update(_HASH_CMDS)
    else:
        for k in _HASH_CMDS:
            cmds.pop(k, None)
    if not offer_tls:
        for k in ("AUTH", "PBSZ", "PROT"):
            cmds.pop(k, None)
    command_log: list[str] = []
    # A fresh subclass per server: pyftpdlib configures handlers through class attributes.
    handler = type(
        f"Handler_{tls_mode}",
        (base,),
        {
            "authorizer": auth,
            "ssl_context": _ssl_context(pki, max_tls_version),
            "offer_tls": offer_tls,
            "allow_prot_p": allow_prot_p,
            "tls_control_required": offer_tls,
            "tls_data_required": offer_tls,
            "certfile": str(pki.cert_path),
            "keyfile": str(pki.key_path),
            "with_hash": with_hash,
            "proto_cmds": cmds,
            "command_log": command_log,
            "require_session_reuse": require_session_reuse,
            "session_reuse_failures": [],
            "banner": f"sectransfer pyftpdlib {tls_mode} ready",
            "passive_ports": list(passive_ports) if passive_ports is not None else None,
            "masquerade_address": None,
            "timeout": 120,
            **(handler_attrs or {}),
        },
    )
    with serve_pyftpd(handler, host, server_attrs) as port:
        yield FTPSServer(
            kind="pyftpdlib",
            host=host,
            port=port,
            tls_mode=tls_mode,
            login=login,
            password=password,
            ca_pem=pki.ca_pem,
            cert_fingerprint=pki.cert_fingerprint,
            writable_dir="/",
            local_root=root,
            server_root=root,
            with_hash=with_hash,
            max_tls_version=max_tls_version,
            start_seconds=time.monotonic() - t0,
            name=name,
            command_log=command_log,
        )
