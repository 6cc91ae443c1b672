#!/usr/bin/env python
"""Issue #16: python-gnupg + Debian's ``gpg`` vs ``pysequoia``, measured side by side.

usage::

    bench/pgp_libs.py                 # 256 MiB throughput, 1 MiB vs 2 GiB memory, error clarity
    bench/pgp_libs.py --size-mib 16 --big-mib 64   # a quick run
    bench/pgp_libs.py --json out.json

What it measures, for each library, with the same keys (ed25519 signing + cv25519 encryption
subkeys, made by ``gpg --quick-gen-key`` in a throwaway home directory; pysequoia loads the
exported armoured keys):

- throughput: encrypt+sign a file of ``--size-mib`` random bytes to a file, then decrypt+verify
  it back, wall time (best of ``--reps``);
- peak memory: the same encrypt+sign of a 1 MiB and of a ``--big-mib`` file, each in a fresh
  process: our process's ``VmHWM`` and the children's (``gpg``) peak RSS from
  ``getrusage(RUSAGE_CHILDREN)`` (which, after fork+exec, is at least the parent's size at the fork:
  read the difference between the two sizes, not the absolute number);
- error clarity: what each library says for a tampered ciphertext, a file encrypted to another key,
  a message signed by a key other than the one expected, and one signed by an expired key.

The file bytes are one 1 MiB random block repeated (the compressors' windows are far smaller, so
it does not compress, and a 2 GiB file is written fast).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MiB = 1 << 20
UID_A = "Bench Sender <sender@example.invalid>"
UID_B = "Bench Partner <partner@example.invalid>"
UID_C = "Bench Stranger <stranger@example.invalid>"
UID_X = "Bench Expired <expired@example.invalid>"


def _gpg(home: Path, *args: str, stdin: bytes | None = None) -> bytes:
    cmd = ["gpg", "--homedir", str(home), "--batch", "--no-tty", "--quiet", *args]
    return subprocess.run(cmd, input=stdin, check=True, capture_output=True).stdout


def make_keys(home: Path) -> dict[str, dict[str, str]]:
    """Generate throwaway keys (no passphrase) and return their armoured public/secret text."""
    home.mkdir(mode=0o700)
    keys: dict[str, dict[str, str]] = {}
    # Made in 2019 so that a message signed in 2020 (by the expired key below, while it was valid) can
    # be encrypted to them too.
    for uid in (UID_A, UID_B, UID_C):
        _gpg(
            home,
            "--faked-system-time",
            "20190101T000000",
            "--passphrase",
            "",
            "--quick-gen-key",
            uid,
            "future-default",
            "default",
            "never",
        )
    # A signer whose key expired: made in 2020 with a one-day life.
    _gpg(
        home,
        "--faked-system-time",
        "20200101T000000",
        "--passphrase",
        "",
        "--quick-gen-key",
        UID_X,
        "future-default",
        "default",
        "1d",
    )
    for name, uid in (("a", UID_A), ("b", UID_B), ("c", UID_C), ("x", UID_X)):
        keys[name] = {
            "public": _gpg(home, "--armor", "--export", uid).decode(),
            "secret": _gpg(home, "--armor", "--export-secret-keys", uid).decode(),
            "uid": uid,
        }
    return keys


def write_file(path: Path, size: int) -> None:
    block = os.urandom(MiB)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, MiB)
            f.write(block[:n])
            left -= n


def vm_hwm_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return -1.0


def children_maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


# --------------------------------------------------------------------------- the two libraries


class GnuPG:
    """python-gnupg driving /usr/bin/gpg in a private home directory."""

    name = "python-gnupg + gpg"

    def __init__(self, work: Path, keys: dict[str, dict[str, str]]) -> None:
        import gnupg

        home = work / "gnupg-home"
        home.mkdir(mode=0o700, exist_ok=True)
        self.gpg = gnupg.GPG(gnupghome=str(home))
        for who, k in keys.items():  # the stranger's secret key is not ours
            self.gpg.import_keys(k["public" if who == "c" else "secret"])
        self.keys = keys

    def _fpr(self, who: str) -> str:
        return str(self.gpg.list_keys(keys=[self.keys[who]["uid"]])[0]["fingerprint"])

    def encrypt(self, src: Path, dst: Path, *, to: str = "b", signer: str | None = "a") -> str:
        with open(src, "rb") as f:
            r = self.gpg.encrypt_file(
                f,
                [self._fpr(to)],
                sign=self._fpr(signer) if signer else None,
                armor=False,
                always_trust=True,
                output=str(dst),
            )
        if not r.ok:
            raise RuntimeError(f"{r.status}: {r.stderr[-300:]}")
        return str(r.status)

    def decrypt(self, src: Path, dst: Path, *, signer: str = "a") -> str:
        with open(src, "rb") as f:
            r = self.gpg.decrypt_file(f, output=str(dst), always_trust=True)
        if not r.ok:
            raise RuntimeError(f"status={r.status!r}; stderr: {r.stderr.strip().splitlines()[-3:]}")
        if not r.valid or r.fingerprint != self._fpr(signer):
            raise RuntimeError(
                f"decrypted but signature not valid from the expected signer: status={r.status!r} "
                f"valid={r.valid} signer={r.username!r} key_status={r.key_status!r}"
            )
        return str(r.status)


class Sequoia:
    """pysequoia (Rust Sequoia-PGP in a wheel), file to file."""

    name = "pysequoia"

    def __init__(self, work: Path, keys: dict[str, dict[str, str]]) -> None:
        import pysequoia

        self.p = pysequoia
        self.certs = {k: pysequoia.Cert.from_bytes(v["public"].encode()) for k, v in keys.items()}
        self.tsks = {k: pysequoia.Tsk.from_bytes(v["secret"].encode()) for k, v in keys.items()}

    def encrypt(self, src: Path, dst: Path, *, to: str = "b", signer: str | None = "a") -> str:
        self.p.encrypt_file(
            str(src),
            str(dst),
            recipients=[self.certs[to]],
            signer=self.tsks[signer].signer() if signer else None,
            armor=False,
        )
        return "ok"

    def decrypt(self, src: Path, dst: Path, *, signer: str = "a") -> str:
        wanted = self.certs[signer]

        def store(_ids: list[str]) -> list[Any]:
            return [wanted]

        d = self.p.decrypt_file(str(src), str(dst), decryptor=self.tsks["b"].decryptor(), store=store)
        if not d.valid_sigs:
            raise RuntimeError("decrypted but no valid signature from the expected signer")
        return f"valid_sigs={len(d.valid_sigs)}"


class Ours:
    """This provider's API (airflow_secure_transfer.security.pgp): gpg driven directly, one store."""

    name = "ours (security/pgp.py, gpg)"

    def __init__(self, work: Path, keys: dict[str, dict[str, str]]) -> None:
        root = Path(__file__).resolve().parent.parent
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
        from airflow_secure_transfer.security.pgp import PGPKeyStore

        self.keys = keys
        self.cls = PGPKeyStore

    def encrypt(self, src: Path, dst: Path, *, to: str = "b", signer: str | None = "a") -> str:
        secret = self.keys[signer]["secret"] if signer else None
        check = signer != "x"
        with self.cls(recipients=self.keys[to]["public"], secret_key=secret, purpose="sign", check=check) as store:
            return str(store.encrypt(src, dst, sign=signer is not None).signer)

    def decrypt(self, src: Path, dst: Path, *, signer: str = "a") -> str:
        with self.cls(secret_key=self.keys["b"]["secret"], verifiers=self.keys[signer]["public"], check=False) as s:
            return str(s.decrypt(src, dst, verify=True).signer)


LIBS = {"gnupg": GnuPG, "sequoia": Sequoia, "ours": Ours}


# --------------------------------------------------------------------------- cases


def throughput(lib: Any, work: Path, size: int, reps: int) -> dict[str, float]:
    src, enc, dec = work / "plain", work / "cipher", work / "back"
    if not src.exists() or src.stat().st_size != size:
        write_file(src, size)
    best_e = best_d = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        lib.encrypt(src, enc)
        best_e = min(best_e, time.perf_counter() - t)
        t = time.perf_counter()
        lib.decrypt(enc, dec)
        best_d = min(best_d, time.perf_counter() - t)
        if dec.stat().st_size != size:
            raise RuntimeError("round trip changed the size")
        dec.unlink()
    mib = size / MiB
    return {"encrypt_sign_mib_s": round(mib / best_e, 1), "decrypt_verify_mib_s": round(mib / best_d, 1)}


def child_memory(libname: str, keys_file: Path, size: int, op: str) -> dict[str, float]:
    """One encrypt (or decrypt) of *size* bytes in a fresh process; its own and its children's peak."""
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            libname,
            "--keys",
            str(keys_file),
            "--child-size",
            str(size),
            "--child-op",
            op,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


class ChildPeak:
    """Sample the ``VmHWM`` of this process's direct children (``gpg``) every 20 ms; keep the largest.

    ``getrusage(RUSAGE_CHILDREN)`` cannot tell a child's own peak from the parent's size at the fork;
    this can (a high-water mark only grows, so the last sample before exit is close to the peak).
    """

    def __init__(self) -> None:
        import threading

        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        me = str(os.getpid())
        while not self._stop.wait(0.02):
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    stat_line = Path(f"/proc/{pid}/stat").read_text()
                    if stat_line.rsplit(")", 1)[1].split()[1] != me:
                        continue
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            self.peak_kib = max(self.peak_kib, int(line.split()[1]))
                except (OSError, IndexError, ValueError):
                    continue

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_kib / 1024


def run_child(libname: str, keys_file: Path, size: int, op: str) -> None:
    keys = json.loads(keys_file.read_text())
    with tempfile.TemporaryDirectory(dir=keys_file.parent) as tmp:
        work = Path(tmp)
        lib = LIBS[libname](work, keys)
        src = work / "plain"
        write_file(src, size)
        enc = work / "cipher"
        if op == "decrypt":
            lib.encrypt(src, enc)
            base_self = vm_hwm_mib()
            sampler = ChildPeak()
            lib.decrypt(enc, work / "back")
        else:
            base_self = vm_hwm_mib()
            sampler = ChildPeak()
            lib.encrypt(src, enc)
        gpg_peak = sampler.stop()
        print(
            json.dumps(
                {
                    "self_peak_mib": round(vm_hwm_mib(), 1),
                    "self_before_mib": round(base_self, 1),
                    "children_peak_mib": round(children_maxrss_mib(), 1),
                    "gpg_peak_mib": round(gpg_peak, 1),
                }
            )
        )


def errors(lib: Any, work: Path, keygen: Path) -> dict[str, str]:
    src = work / "small"
    write_file(src, 64 * 1024)
    good = work / "good.pgp"
    lib.encrypt(src, good)
    said: dict[str, str] = {}

    def attempt(case: str, fn: Any) -> None:
        try:
            status = fn()
        except Exception as exc:  # the message is what is measured
            said[case] = f"{type(exc).__name__}: {str(exc)[:300]}"
        else:
            said[case] = f"NOT DETECTED ({status})"

    tampered = work / "tampered.pgp"
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered.write_bytes(bytes(data))
    attempt("tampered ciphertext", lambda: lib.decrypt(tampered, work / "o1"))
    other = work / "other.pgp"
    lib.encrypt(src, other, to="c")
    attempt("encrypted to another key", lambda: lib.decrypt(other, work / "o2"))
    attempt("signed by another key", lambda: lib.decrypt(good, work / "o3", signer="c"))
    # Signed by the expired key while it was valid (neither library signs with an expired key now).
    expired = work / "expired.pgp"
    _gpg(
        keygen,
        "--faked-system-time",
        "20200101T120000",
        "--trust-model",
        "always",
        "--sign",
        "--encrypt",
        "--local-user",
        UID_X,
        "--recipient",
        UID_B,
        "--output",
        str(expired),
        str(src),
    )
    attempt("signed by an expired key", lambda: lib.decrypt(expired, work / "o4", signer="x"))
    return said


def _big(a: argparse.Namespace, libname: str, op: str) -> int:
    """pysequoia's decrypt holds the whole message in memory (about 5x its size): capped, not 2 GiB."""
    big: int = a.big_mib
    return min(big, a.sequoia_decrypt_big_mib) if (libname, op) == ("sequoia", "decrypt") else big


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--big-mib", type=int, default=2048)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--sequoia-decrypt-big-mib", type=int, default=256)
    ap.add_argument("--json")
    ap.add_argument("--libs", default=",".join(LIBS), help="comma-separated subset of " + ",".join(LIBS))
    ap.add_argument("--child", choices=sorted(LIBS))
    ap.add_argument("--keys")
    ap.add_argument("--child-size", type=int)
    ap.add_argument("--child-op", default="encrypt")
    a = ap.parse_args()
    if a.child:
        run_child(a.child, Path(a.keys), a.child_size, a.child_op)
        return 0
    if shutil.which("gpg") is None:
        print("gpg not found (apt-get install gnupg)", file=sys.stderr)
        return 2
    results: dict[str, Any] = {"size_mib": a.size_mib, "big_mib": a.big_mib, "libs": {}}
    with tempfile.TemporaryDirectory(prefix="pgp-bench-") as tmp:
        root = Path(tmp)
        keys = make_keys(root / "keygen")
        keys_file = root / "keys.json"
        keys_file.write_text(json.dumps(keys))
        for libname in a.libs.split(","):
            cls = LIBS[libname]
            work = root / libname
            work.mkdir()
            lib = cls(work, keys)
            r: dict[str, Any] = {"name": lib.name}
            r["throughput"] = throughput(lib, work, a.size_mib * MiB, a.reps)
            for f in work.glob("*"):
                if f.is_file():
                    f.unlink()
            r["memory"] = {
                f"{op} {label}": child_memory(libname, keys_file, size, op)
                for op in ("encrypt", "decrypt")
                for label, size in (("1 MiB", MiB), (f"{_big(a, libname, op)} MiB", _big(a, libname, op) * MiB))
            }
            r["errors"] = errors(lib, work, root / "keygen")
            results["libs"][libname] = r
            print(json.dumps(r, indent=1), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
