#!/usr/bin/env python
"""Run the test suite's pyftpdlib FTPS server in a process of its own (for the benchmarks).

The benchmark measures the server's CPU apart from the client's, so the server cannot
share the client's process (as it does in the tests). This child starts
:func:`tests.servers.pyftpd.run_pyftpd` with the PKI files the parent made, prints
one JSON line ``{"port": N}`` on stdout, and runs until its stdin is closed.

The login and password come in the environment (``BENCH_FTP_LOGIN`` /
``BENCH_FTP_PASSWORD``), not on the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.servers.pki import ServerPKI  # noqa: E402
from tests.servers.pyftpd import run_pyftpd  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--root", required=True, help="the FTP root directory (remote /)")
    ap.add_argument("--ca", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--fingerprint", required=True)
    ap.add_argument(
        "--require-session-reuse",
        action="store_true",
        help="refuse data connections that do not resume the control TLS session (stock ftplib then fails)",
    )
    a = ap.parse_args()
    pki = ServerPKI(
        ca=None,
        ca_pem=Path(a.ca).read_text(),
        ca_path=Path(a.ca),
        cert_path=Path(a.cert),
        key_path=Path(a.key),
        cert_fingerprint=a.fingerprint,
    )
    with run_pyftpd(
        Path(a.root),
        pki,
        tls_mode="explicit",
        with_hash=True,
        require_session_reuse=a.require_session_reuse,
        login=os.environ["BENCH_FTP_LOGIN"],
        password=os.environ["BENCH_FTP_PASSWORD"],
        name="bench-pyftpd",
    ) as server:
        # The fixture keeps every command line (for the tests' assertions); here nobody reads them, and
        # a 10,000-file run adds ~50,000 lines per repetition: empty the list now and then.
        log = server.command_log
        stop = threading.Event()

        def trim() -> None:
            while not stop.wait(5.0):
                log.clear()

        threading.Thread(target=trim, name="trim-command-log", daemon=True).start()
        print(json.dumps({"port": server.port}), flush=True)
        try:
            while sys.stdin.buffer.read(65536):
                pass
        except KeyboardInterrupt:
            pass
        stop.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())
