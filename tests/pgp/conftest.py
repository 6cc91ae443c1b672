"""Throwaway OpenPGP keys made by the real ``gpg`` CLI (never committed), and a ``gpg`` runner for interop.

``pgp_keys`` (session): a :class:`PGPTestKeys` with the armoured keys of

* ``alice``: our key (Ed25519 + Cv25519, passphrase :data:`ALICE_PASSPHRASE`): signs uploads, decrypts downloads;
* ``bob``: the partner (RSA 3072 + RSA 3072 encryption subkey, no passphrase): the recipient of uploads;
* ``stranger``: a third party (Ed25519 + Cv25519) whose signature or encryption is not accepted;
* ``expired``: a signer key that expired in 2020 (it signed a message while valid: ``expired_signed``);
* ``revoked``, ``rsa1024``, ``dsa``, ``sign_only`` (no encryption subkey): keys the policy refuses.

Every key but ``expired`` was made with a faked 2019 clock so that a 2020 message can be encrypted to them.
The key-generation home (``pgp_keys.home``) holds every secret key: :meth:`PGPTestKeys.gpg` runs the
CLI there (the partner's side of the interop tests).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ALICE_PASSPHRASE = "correct horse battery staple 7"
PAST = "20190101T000000"


@dataclasses.dataclass
class PGPTestKeys:
    home: Path
    public: dict[str, str]
    secret: dict[str, str]
    fpr: dict[str, str]
    #: A message signed by ``expired`` (while valid, in 2020) and encrypted to ``alice``.
    expired_signed: bytes

    def signed_for(self, data: bytes, *, signer: str = "bob", to: str = "alice", armor: bool = False) -> bytes:
        """What the partner's ``gpg --sign --encrypt`` makes of *data* (signed by *signer*, to *to*)."""
        args = ["--sign", "--encrypt", "--local-user", self.fpr[signer], "--recipient", self.fpr[to]]
        return self.gpg(*args, *(["--armor"] if armor else []), "--output", "-", stdin=data).stdout

    def gpg(self, *args: str, stdin: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        """Run the real gpg CLI in the key-generation home (the partner's side)."""
        return subprocess.run(
            ["gpg", "--homedir", str(self.home), "--batch", "--no-tty", "--trust-model", "always", *args],
            input=stdin,
            capture_output=True,
            check=check,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GNUPGHOME": str(self.home), "LC_ALL": "C"},
        )


def _fpr(keys: PGPTestKeys, uid: str) -> str:
    listing = keys.gpg("--with-colons", "--list-keys", uid).stdout.decode()
    return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))


@pytest.fixture(scope="session")
def pgp_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PGPTestKeys]:
    if shutil.which("gpg") is None:
        pytest.skip("gpg is not installed (scripts/install-system-deps.sh installs gnupg)")
    home = tmp_path_factory.mktemp("pgp-keygen")
    home.chmod(0o700)
    keys = PGPTestKeys(home, {}, {}, {}, b"")
    old = ("--faked-system-time", PAST)
    specs = {
        "alice": ("Alice Ours <alice@example.invalid>", "future-default", "default", "never", ALICE_PASSPHRASE),
        "bob": ("Bob Partner <bob@example.invalid>", "rsa3072", "default", "never", ""),
        "stranger": ("Mallory Stranger <mallory@example.invalid>", "future-default", "default", "never", ""),
        "revoked": ("Rex Revoked <rex@example.invalid>", "future-default", "default", "never", ""),
        "rsa1024": ("Walt Weak <walt@example.invalid>", "rsa1024", "default", "never", ""),
        "dsa": ("Dora DSA <dora@example.invalid>", "dsa2048", "default", "never", ""),
        "sign_only": ("Sid Signonly <sid@example.invalid>", "ed25519", "sign", "never", ""),
    }
    for name, (uid, algo, usage, expire, passphrase) in specs.items():
        keys.gpg(
            *old, "--pinentry-mode", "loopback", "--passphrase", passphrase, "--quick-gen-key", uid, algo, usage, expire
        )
        keys.fpr[name] = _fpr(keys, uid)
    # Bob's RSA key gets an RSA encryption subkey (quick-gen-key with an rsa algorithm makes only the primary).
    for name, algo in (("bob", "rsa3072"), ("rsa1024", "rsa1024"), ("dsa", "elg2048")):
        args = ("--pinentry-mode", "loopback", "--passphrase", "", "--quick-add-key", keys.fpr[name], algo, "encr")
        keys.gpg(*old, *args, "never")
    # Revoke "revoked" with the revocation certificate gpg made with it (its first ':' guards it).
    rev = (home / "openpgp-revocs.d" / f"{keys.fpr['revoked']}.rev").read_text().replace(":-----BEGIN", "-----BEGIN")
    keys.gpg("--import", stdin=rev.encode())
    # The expired signer: valid for one day in 2020.
    uid = "Erin Expired <erin@example.invalid>"
    keys.gpg(
        "--faked-system-time",
        "20200101T000000",
        "--passphrase",
        "",
        "--quick-gen-key",
        uid,
        "future-default",
        "default",
        "1d",
    )
    keys.fpr["expired"] = _fpr(keys, uid)
    for name, fpr in keys.fpr.items():
        keys.public[name] = keys.gpg("--armor", "--export", fpr).stdout.decode()
        passphrase = ALICE_PASSPHRASE if name == "alice" else ""
        keys.secret[name] = keys.gpg(
            "--pinentry-mode", "loopback", "--passphrase", passphrase, "--armor", "--export-secret-keys", fpr
        ).stdout.decode()
    keys.expired_signed = keys.gpg(
        "--faked-system-time",
        "20200101T120000",
        "--sign",
        "--encrypt",
        "--local-user",
        keys.fpr["expired"],
        "--recipient",
        keys.fpr["alice"],
        "--output",
        "-",
        stdin=b"signed by a key that expired since\n",
    ).stdout
    yield keys
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False, capture_output=True)


@pytest.fixture
def private_staging_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The operators' PGP staging goes under this test's tmp_path, not the machine's temporary directory."""
    from airflow_secure_transfer.transfer import encrypted

    base = tmp_path / "staging-base"
    base.mkdir()
    monkeypatch.setattr(encrypted, "staging_base", lambda: base)
    return base


@pytest.fixture
def pgp_conn(monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """Return ``make(conn_id, *, public_keys=None, private_key=None, password=None, **extras) -> conn_id``.

    Sets ``AIRFLOW_CONN_<CONN_ID>`` to a ``secure_pgp`` connection (JSON form), undone after the test.
    """

    def make(
        conn_id: str,
        *,
        public_keys: str | None = None,
        private_key: str | None = None,
        password: str | None = None,
        conn_type: str = "secure_pgp",
        **extras: Any,
    ) -> str:
        extra = {k: v for k, v in {"public_keys": public_keys, "private_key": private_key, **extras}.items() if v}
        body: dict[str, Any] = {"conn_type": conn_type, "extra": extra}
        if password is not None:
            body["password"] = password
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(body))
        return conn_id

    return make
