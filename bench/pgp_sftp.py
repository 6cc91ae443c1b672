#!/usr/bin/env python
"""Issue #16 bench: 256 MiB encrypt+upload and download+decrypt over SFTP, ours next to gpg + OpenSSH.

usage::

    bench/pgp_sftp.py                  # 256 MiB, 2 repetitions, OpenSSH sshd on loopback (needs root + sshd)
    bench/pgp_sftp.py --size-mib 16 --reps 1

Cases, each against the same OpenSSH sshd that bench/run.py uses (``start_servers``), the file encrypted to
key B and signed by key A (ed25519/cv25519, throwaway, made by ``gpg --quick-gen-key``):

upload
  ours            ``SecureUploadOperator(encrypt_with=, sign_with=).execute()``: encrypt into the task's
                  private staging directory, then the verified, atomic upload of that ciphertext
  gpg; sftp put   ``gpg -s -e -o FILE`` then ``sftp -b`` with ``put FILE``: OpenSSH's ``sftp`` refuses a
                  pipe (``put`` needs a regular file) and the test sshd is SFTP-only (``ssh host 'cat > f'``
                  is refused), so the shell way is two steps through a local ciphertext file
download
  ours            ``SecureSFTPHook.retrieve_file`` into a temporary file, then ``PGPKeyStore.decrypt(...,
                  verify=True)`` into a temporary file that is renamed after success (what the download
                  operator does with this API)
  sftp get; gpg   ``sftp -b`` with ``get`` then ``gpg -d`` to a file

gpg's default compression applies everywhere (random data: the same cost on both sides).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (str(HERE), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

MiB = 1 << 20


def _gpg(home: Path, *args: str) -> bytes:
    cmd = ["gpg", "--homedir", str(home), "--batch", "--no-tty", "--quiet", "--trust-model", "always", *args]
    return subprocess.run(cmd, check=True, capture_output=True).stdout


def _sh(cmd: str) -> None:
    subprocess.run(["bash", "-o", "pipefail", "-c", cmd], check=True, capture_output=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--json")
    a = ap.parse_args()

    from cases import OURS_SFTP, connection_env
    from servers import start_servers

    from airflow_secure_transfer.hooks.sftp import SecureSFTPHook
    from airflow_secure_transfer.operators.upload import SecureUploadOperator
    from airflow_secure_transfer.security.pgp import PGPKeyStore

    results: dict[str, list[float]] = {}
    a.size_mib * MiB
    with start_servers(need_interop=True) as s, tempfile.TemporaryDirectory(prefix="pgp-sftp-bench-") as tmp:
        if s.sshd is None:
            print(f"sshd unavailable: {s.unavailable.get('sshd')}", file=sys.stderr)
            return 2
        os.environ.update(connection_env(s))
        work = Path(tmp)
        home = work / "gnupg"
        home.mkdir(mode=0o700)
        for uid in ("A <a@bench.invalid>", "B <b@bench.invalid>"):
            _gpg(home, "--passphrase", "", "--quick-gen-key", uid, "future-default", "default", "never")
        pub_b = _gpg(home, "--armor", "--export", "B <b@bench.invalid>").decode()
        pub_a = _gpg(home, "--armor", "--export", "A <a@bench.invalid>").decode()
        sec_a = _gpg(home, "--armor", "--export-secret-keys", "A <a@bench.invalid>").decode()
        sec_b = _gpg(home, "--armor", "--export-secret-keys", "B <b@bench.invalid>").decode()
        os.environ["AIRFLOW_CONN_BENCH_PARTNER_PGP"] = json.dumps(
            {"conn_type": "secure_pgp", "extra": {"public_keys": pub_b}}
        )
        os.environ["AIRFLOW_CONN_BENCH_OUR_PGP"] = json.dumps(
            {"conn_type": "secure_pgp", "extra": {"private_key": sec_a}}
        )
        src = work / "payload.bin"
        block = os.urandom(MiB)
        with open(src, "wb") as f:
            for _ in range(a.size_mib):
                f.write(block)
        remote_dir = s.sshd.writable_dir
        gpg = f"gpg --homedir {home} --batch --no-tty --quiet --trust-model always"

        def timed(name: str, fn: Any) -> None:
            t = time.perf_counter()
            fn()
            results.setdefault(name, []).append(time.perf_counter() - t)

        def ours_up(rep: int) -> None:
            SecureUploadOperator(
                task_id=f"bench_pgp_{rep}",
                conn_id=OURS_SFTP,
                local_path=str(src),
                remote_path=f"{remote_dir}/ours-{rep}.pgp",
                encrypt_with="bench_partner_pgp",
                sign_with="bench_our_pgp",
            ).execute(context={})

        def gpg_then_sftp(rep: int) -> None:
            enc = work / f"enc-{rep}.pgp"
            _sh(f"{gpg} -s -u A -e -r B -o {enc} {src}")
            batch = work / "batch"
            batch.write_text(f'put "{enc}" "{remote_dir}/cli-{rep}.pgp"\n')
            _sh(f"sftp -F {s.ssh_config} -b {batch} bench-sshd")
            enc.unlink()

        def ours_down(rep: int) -> None:
            hook = SecureSFTPHook(OURS_SFTP)
            cipher = work / f".down-{rep}.pgp.part"
            plain_tmp = work / f".down-{rep}.bin.part"
            hook.retrieve_file(f"{remote_dir}/ours-{rep}.pgp", str(cipher))
            hook.close_conn()
            with PGPKeyStore(secret_key=sec_b, verifiers=pub_a, purpose="decrypt") as store:
                store.decrypt(cipher, plain_tmp, verify=True)
            os.replace(plain_tmp, work / f"down-{rep}.bin")
            cipher.unlink()

        def sftp_then_gpg(rep: int) -> None:
            batch = work / "batch"
            got = work / f"got-{rep}.pgp"
            batch.write_text(f'get "{remote_dir}/cli-{rep}.pgp" "{got}"\n')
            _sh(f"sftp -F {s.ssh_config} -b {batch} bench-sshd")
            _sh(f"{gpg} -d -o {work}/cli-{rep}.bin {got}")
            got.unlink()

        for rep in range(a.reps):
            timed("upload: ours (encrypt_with + sign_with)", lambda rep=rep: ours_up(rep))
            timed("upload: gpg -s -e to a file; sftp put", lambda rep=rep: gpg_then_sftp(rep))
            timed("download: ours (retrieve_file; decrypt verify=True; rename)", lambda rep=rep: ours_down(rep))
            timed("download: sftp get; gpg -d", lambda rep=rep: sftp_then_gpg(rep))
            for name in (f"down-{rep}.bin", f"cli-{rep}.bin"):
                back = work / name
                if back.read_bytes() != src.read_bytes():
                    raise RuntimeError(f"{name} differs from the source")
                back.unlink()
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)
    rows = {k: {"best_s": round(min(v), 2), "mib_s": round(a.size_mib / min(v), 1)} for k, v in results.items()}
    for name, row in rows.items():
        print(f"| {name} | {row['best_s']} | {row['mib_s']} |")
    if a.json:
        Path(a.json).write_text(json.dumps({"size_mib": a.size_mib, "reps": a.reps, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
