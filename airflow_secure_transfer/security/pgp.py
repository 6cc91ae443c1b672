"""OpenPGP: key loading and inspection, streaming encrypt(+sign) and decrypt(+verify), isolated key stores.

Everything runs Debian's ``gpg`` (GnuPG 2.2+, package ``gnupg``) as a child process in a
**fresh key store**: a ``0700`` temporary directory made for one :class:`PGPKeyStore`, holding only
the keys given to it, and removed with its agent when the store is closed, also after an error.
Never the worker user's keyring, never a keyserver (``--disable-dirmngr``, no key retrieval), never a
``gpg.conf`` (``--no-options``). The passphrase goes through a pipe (``--passphrase-fd``,
``--pinentry-mode loopback``), never the command line or the environment.

Why ``gpg`` driven directly and not python-gnupg or pysequoia: see BENCHMARKS.md, "OpenPGP
libraries". In short: ``gpg`` streams in bounded memory both ways (pysequoia 0.1.35 holds a whole
decrypted message in memory), python-gnupg cannot stream into a file object (it buffers the output
in memory unless it writes to a path) and writes the passphrase into the data pipe; ``gpg``'s
machine-readable ``--status-fd`` lines say exactly what failed, which we map onto our errors.

The two streaming directions (the upload operator uses the first, the download operator the second)::

    with PGPKeyStore(recipients=partner_public, secret_key=our_secret, passphrase=pw) as store:
        result = store.encrypt(source, sink, sign=True, armor=False)   # paths or binary file objects
        # or, pushing bytes as they come (e.g. from a network read):
        with store.encryptor(sink, sign=True) as stream:
            stream.write(chunk) ...
        stream.result                                                  # PGPResult, after the block

    with PGPKeyStore(secret_key=our_secret, passphrase=pw, verifiers=partner_public) as store:
        result = store.decrypt(source, temp_sink, verify=True)
        # returns only if the message decrypted, its integrity (MDC) checked and, with verify=True,
        # it carries a good signature by one of the verifiers' keys; *then* rename temp_sink.

**A decrypting sink receives plaintext before the end of the message is checked** (an OpenPGP
message proves its integrity and its signature only at its end, like every streaming decryptor):
always decrypt into a temporary file that you delete on error and rename only after
:meth:`PGPKeyStore.decrypt` (or the ``with`` block of :meth:`PGPKeyStore.decryptor`) returned.

Errors: a malformed, expired, revoked or weak key, or a passphrase that does not open the secret key
-> :class:`~airflow_secure_transfer.exceptions.SecurityPolicyError` (or ``ConfigurationError`` for
missing/malformed key text); a message that does not decrypt, was tampered with, was encrypted to
another key, or lacks a good signature by an accepted key ->
:class:`~airflow_secure_transfer.exceptions.VerificationError`; ``gpg`` missing ->
``ConfigurationError``. None of them is retryable. No message contains key material or a passphrase
(fingerprints, user ids and ``gpg``'s status words only).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Final, Literal, Protocol

from airflow_secure_transfer.exceptions import (
    ConfigurationError,
    SecureTransferError,
    SecurityPolicyError,
    VerificationError,
    scrub_secrets,
)

__all__ = [
    "PGPKeyInfo",
    "PGPKeyStore",
    "PGPResult",
    "PGPStream",
    "SubkeyInfo",
    "gpg_binary",
    "inspect_keys",
    "strip_pgp_suffix",
]

#: Longest accepted key text (a handful of RSA-4096 keys with many signatures fit easily).
MAX_KEY_TEXT: Final = 1024 * 1024
#: Copy size between the source, ``gpg`` and the sink: memory stays bounded by a few of these.
_CHUNK: Final = 1024 * 1024
#: Smallest RSA modulus accepted, in bits.
MIN_RSA_BITS: Final = 2048
#: Seconds allowed for a key-management call (import, listing, passphrase check).
_KEY_OP_TIMEOUT: Final = 60.0
#: The file name suffixes an encrypted file carries (removed on download).
PGP_SUFFIXES: Final = (".pgp", ".gpg", ".asc")

# RFC 4880 / 6637 / crypto-refresh public-key algorithm ids, as gpg's colon listing gives them.
_ALGORITHMS: Final = {
    1: "RSA",
    2: "RSA (encrypt-only)",
    3: "RSA (sign-only)",
    16: "ElGamal",
    17: "DSA",
    18: "ECDH",
    19: "ECDSA",
    20: "ElGamal (sign+encrypt)",
    22: "EdDSA",
    25: "X25519",
    26: "X448",
    27: "Ed25519",
    28: "Ed448",
}
_RSA: Final = frozenset({1, 2, 3})
_ELGAMAL: Final = frozenset({16, 20})
_DSA: Final = 17

Source = str | os.PathLike[str] | IO[bytes]


class BinarySink(Protocol):
    """Where a stream's output goes: anything with ``write(bytes)`` (a file opened ``"wb"``, a socket writer)."""

    def write(self, data: bytes, /) -> object: ...


def gpg_binary() -> str:
    """Return the path of the ``gpg`` program.

    :raises ConfigurationError: not installed (Debian/Ubuntu: ``apt-get install gnupg``).
    """
    found = shutil.which("gpg")
    if found is None:
        raise ConfigurationError(
            "OpenPGP needs the gpg program (GnuPG 2.2 or later) on the workers: "
            "apt-get install gnupg (see the README's set-up)"
        )
    return found


def strip_pgp_suffix(name: str) -> str:
    """Return *name* without a trailing ``.pgp``/``.gpg``/``.asc`` (case-insensitive), if it has one.

    What the download side does to a decrypted file's local name.
    """
    lowered = name.lower()
    for suffix in PGP_SUFFIXES:
        if lowered.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


# --------------------------------------------------------------------------- key inspection


@dataclasses.dataclass(frozen=True)
class SubkeyInfo:
    """One primary key or subkey, as the colon listing describes it.

    :param fingerprint: hex fingerprint of this (sub)key.
    :param algorithm: e.g. ``"RSA 3072"``, ``"EdDSA ed25519"``, ``"ECDH cv25519"``.
    :param capabilities: a subset of ``"esca"`` (encrypt, sign, certify, authenticate).
    :param expires: when it expires (UTC), ``None`` for never.
    :param revoked: whether it is revoked.
    """

    fingerprint: str
    algorithm_id: int
    bits: int
    curve: str
    capabilities: str
    created: datetime.datetime | None
    expires: datetime.datetime | None
    revoked: bool

    @property
    def algorithm(self) -> str:
        """A readable algorithm name with its size or curve."""
        name = _ALGORITHMS.get(self.algorithm_id, f"algorithm {self.algorithm_id}")
        return f"{name} {self.curve}" if self.curve else f"{name} {self.bits}"

    def expired(self, now: datetime.datetime) -> bool:
        """Whether it has expired at *now*."""
        return self.expires is not None and self.expires <= now

    def usable(self, now: datetime.datetime) -> bool:
        """Neither revoked nor expired at *now*."""
        return not self.revoked and not self.expired(now)

    def weakness(self) -> str | None:
        """Why this key's algorithm is refused (RSA < 2048 bits, DSA, ElGamal), or ``None``."""
        if self.algorithm_id in _RSA and self.bits < MIN_RSA_BITS:
            return f"RSA {self.bits} bits (at least {MIN_RSA_BITS} required)"
        if self.algorithm_id == _DSA:
            return "DSA (refused: at most 1024/3072 bits, fragile nonces, deprecated)"
        if self.algorithm_id in _ELGAMAL:
            return "ElGamal (refused: deprecated)"
        return None


@dataclasses.dataclass(frozen=True)
class PGPKeyInfo:
    """What a key (certificate) is: the Test button and the logs show :meth:`describe`.

    :param fingerprint: the primary key's fingerprint (hex, upper case): the key's identity.
    :param user_ids: its user ids (``"Name <mail>"``), as given by its owner (not verified by us).
    :param has_secret: whether the secret key was loaded.
    :param primary: the primary key; :param subkeys: the subkeys.
    """

    fingerprint: str
    user_ids: tuple[str, ...]
    primary: SubkeyInfo
    subkeys: tuple[SubkeyInfo, ...]
    has_secret: bool = False

    @property
    def keys(self) -> tuple[SubkeyInfo, ...]:
        """The primary key followed by the subkeys."""
        return (self.primary, *self.subkeys)

    @property
    def expires(self) -> datetime.datetime | None:
        """When the key as a whole expires (the primary key's expiry)."""
        return self.primary.expires

    def usable_for(self, capability: Literal["e", "s"], now: datetime.datetime) -> list[SubkeyInfo]:
        """The (sub)keys that can *capability* (``"e"`` encrypt, ``"s"`` sign) now and are not weak."""
        if not self.primary.usable(now):
            return []
        return [k for k in self.keys if capability in k.capabilities and k.usable(now) and k.weakness() is None]

    def describe(self) -> str:
        """One line: fingerprint, user ids, algorithms, capabilities, expiry."""
        uids = ", ".join(self.user_ids) or "(no user id)"
        algorithms = "; ".join(
            f"{k.algorithm} [{k.capabilities or '-'}]" + (" revoked" if k.revoked else "") for k in self.keys
        )
        expires = "never expires" if self.expires is None else f"expires {self.expires:%Y-%m-%d}"
        kind = "secret key" if self.has_secret else "public key"
        return f"{kind} {self.fingerprint} {uids}: {algorithms}; {expires}"

    def problems(
        self, now: datetime.datetime, *, purpose: Literal["encrypt", "sign", "decrypt", "verify"]
    ) -> list[str]:
        """Say what makes this key unacceptable for *purpose* (empty: acceptable)."""
        found: list[str] = []
        if self.primary.revoked:
            found.append("revoked")
        if self.primary.expired(now):
            assert self.primary.expires is not None
            found.append(f"expired on {self.primary.expires:%Y-%m-%d}")
        weak = self.primary.weakness()
        if weak:
            found.append(f"weak primary key: {weak}")
        if found:
            return found
        capability: Literal["e", "s"] = "e" if purpose in ("encrypt", "decrypt") else "s"
        if not self.usable_for(capability, now):
            kinds = {"e": "encryption", "s": "signing"}[capability]
            weak_ones = [k.weakness() for k in self.keys if capability in k.capabilities and k.weakness()]
            why = f" (only weak ones: {'; '.join(w for w in weak_ones if w)})" if weak_ones else ""
            found.append(f"no valid {kinds}-capable (sub)key{why}")
        return found


def _epoch(value: str) -> datetime.datetime | None:
    if not value:
        return None
    if "T" in value:  # ISO form (gpg with --fixed-list-mode does not use it, be lenient)
        return datetime.datetime.strptime(value, "%Y%m%dT%H%M%S").replace(tzinfo=datetime.UTC)
    return datetime.datetime.fromtimestamp(int(value), tz=datetime.UTC)


def _unescape(value: str) -> str:
    """Undo the colon listing's ``\\xNN`` escapes (user ids)."""
    if "\\x" not in value:
        return value
    out = bytearray()
    i = 0
    raw = value.encode("utf-8", "surrogateescape")
    while i < len(raw):
        if raw[i : i + 2] == b"\\x" and i + 4 <= len(raw):
            try:
                out.append(int(raw[i + 2 : i + 4], 16))
                i += 4
                continue
            except ValueError:
                pass
        out.append(raw[i])
        i += 1
    return out.decode("utf-8", "replace")


def _parse_colons(listing: str, *, secret: bool) -> list[PGPKeyInfo]:
    """Parse ``gpg --with-colons --fixed-list-mode --list-(secret-)keys`` output."""
    keys: list[PGPKeyInfo] = []
    primary: SubkeyInfo | None = None
    subkeys: list[SubkeyInfo] = []
    uids: list[str] = []
    pending: list[str] | None = None  # the pub/sub record awaiting its fpr line

    def flush() -> None:
        nonlocal primary, subkeys, uids
        if primary is not None:
            keys.append(PGPKeyInfo(primary.fingerprint, tuple(uids), primary, tuple(subkeys), has_secret=secret))
        primary, subkeys, uids = None, [], []

    top, sub = ("sec", "ssb") if secret else ("pub", "sub")
    for line in listing.splitlines():
        f = line.split(":")
        kind = f[0]
        if kind == top:
            flush()
            pending = f
        elif kind == sub:
            pending = f
        elif kind == "fpr" and pending is not None:
            fields = pending
            info = SubkeyInfo(
                fingerprint=f[9],
                algorithm_id=int(fields[3] or 0),
                bits=int(fields[2] or 0),
                curve=fields[16] if len(fields) > 16 else "",
                # Lower case: this (sub)key's own capabilities (upper case on the primary: the whole key's).
                capabilities="".join(c for c in fields[11] if c in "esca") if len(fields) > 11 else "",
                created=_epoch(fields[5]),
                expires=_epoch(fields[6]),
                revoked=fields[1] == "r",
            )
            if fields[0] == top:
                primary = info
            else:
                subkeys.append(info)
            pending = None
        elif kind == "uid" and primary is not None and len(f) > 9 and f[1] != "r":
            uids.append(_unescape(f[9]))
    flush()
    return keys


def inspect_keys(armored: str, *, secret: bool = False) -> list[PGPKeyInfo]:
    """Describe the keys in ASCII-armoured *armored* text without keeping them anywhere.

    Uses a throwaway key store (removed before returning). A secret key needs no passphrase to be
    described; :class:`PGPKeyStore` checks the passphrase.

    :raises ConfigurationError: no key in the text, text too long, or ``gpg`` missing.
    """
    store = PGPKeyStore(secret_key=armored, check=False) if secret else PGPKeyStore(recipients=armored, check=False)
    with store:
        return list(store.secret_keys if secret else store.recipient_keys)


# --------------------------------------------------------------------------- results and streams


@dataclasses.dataclass(frozen=True)
class PGPResult:
    """What one encryption or decryption did.

    :param plaintext_bytes: / :param plaintext_sha256: the clear bytes (read when encrypting, written
        when decrypting).
    :param ciphertext_bytes: / :param ciphertext_sha256: the OpenPGP message's bytes (written when
        encrypting, read when decrypting): what is, or was, on the server.
    :param signer: the primary fingerprint of the key whose good signature was verified (decrypt with
        ``verify=True``) or that signed (encrypt with ``sign=True``); ``None`` otherwise.
    :param recipients: encrypt: the primary fingerprints encrypted to.
    """

    plaintext_bytes: int
    plaintext_sha256: str
    ciphertext_bytes: int
    ciphertext_sha256: str
    signer: str | None = None
    recipients: tuple[str, ...] = ()


class _Counter:
    """Count and hash bytes as they pass."""

    def __init__(self) -> None:
        self.count = 0
        self.hash = hashlib.sha256()

    def add(self, data: bytes) -> None:
        self.count += len(data)
        self.hash.update(data)


class PGPStream:
    """A running ``gpg`` fed by :meth:`write`, its output copied into a sink; see :meth:`PGPKeyStore.encryptor`.

    Use it as a context manager: leaving the block without an exception closes the input and waits
    for ``gpg``, checks what it said, and sets :attr:`result` (or raises); leaving it with an
    exception kills ``gpg``. Memory: a few ``_CHUNK``-sized buffers, whatever the size.
    """

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        sink: BinarySink,
        *,
        mode: Literal["encrypt", "decrypt"],
        passphrase: str | None,
        finish: _Finisher,
        max_output: int | None,
    ) -> None:
        self._mode = mode
        self._finish = finish
        self._max_output = max_output
        self._input = _Counter()
        self._output = _Counter()
        self._status: list[str] = []
        self._stderr = bytearray()
        self._sink_error: BaseException | None = None
        self._too_big = False
        self.result: PGPResult | None = None
        status_r, status_w = os.pipe()
        pass_fds = [status_w]
        pass_r: int | None = None
        full = [argv[0], "--status-fd", str(status_w), *argv[1:]]
        if passphrase is not None:
            pass_r, pass_w = os.pipe()
            # The passphrase is written before gpg starts (a pipe holds 64 KiB; refused longer below).
            encoded = passphrase.encode("utf-8") + b"\n"
            if len(encoded) > 60_000:
                os.close(pass_r)
                os.close(pass_w)
                os.close(status_r)
                os.close(status_w)
                raise ConfigurationError("the PGP passphrase is longer than 60,000 bytes")
            os.write(pass_w, encoded)
            os.close(pass_w)
            pass_fds.append(pass_r)
            full[1:1] = ["--pinentry-mode", "loopback", "--passphrase-fd", str(pass_r)]
        try:
            # argv: fixed options, fingerprints and file descriptor numbers only (never a secret).
            self._proc = subprocess.Popen(  # noqa: S603
                full,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=pass_fds,
                env=env,
                close_fds=True,
            )
        finally:
            os.close(status_w)
            if pass_r is not None:
                os.close(pass_r)
        self._status_file = os.fdopen(status_r, "rb")
        assert self._proc.stdout is not None and self._proc.stderr is not None and self._proc.stdin is not None
        self._stdin = self._proc.stdin
        self._threads = [
            threading.Thread(target=self._pump_out, args=(self._proc.stdout, sink), daemon=True),
            threading.Thread(target=self._pump_status, daemon=True),
            threading.Thread(target=self._pump_stderr, args=(self._proc.stderr,), daemon=True),
        ]
        for t in self._threads:
            t.start()

    # -- pumps (threads)

    def _pump_out(self, stdout: IO[bytes], sink: BinarySink) -> None:
        try:
            while True:
                data = stdout.read1(_CHUNK) if hasattr(stdout, "read1") else stdout.read(_CHUNK)
                if not data:
                    return
                if self._max_output is not None and self._output.count + len(data) > self._max_output:
                    self._too_big = True
                    self._proc.kill()
                    return
                self._output.add(data)
                if self._sink_error is None:
                    sink.write(data)
        except BaseException as exc:
            self._sink_error = exc
            self._proc.kill()
        finally:
            with contextlib.suppress(OSError):
                while stdout.read(_CHUNK):  # drain so that gpg never blocks on a full pipe
                    pass

    def _pump_status(self) -> None:
        with self._status_file:
            for raw in self._status_file:
                if len(self._status) < 10_000:
                    self._status.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def _pump_stderr(self, stderr: IO[bytes]) -> None:
        for raw in stderr:
            self._stderr += raw
            if len(self._stderr) > 16_384:
                del self._stderr[: len(self._stderr) - 16_384]

    # -- the writer side

    def writable(self) -> bool:
        """Always true: this is a writable binary stream."""
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Feed *data* to ``gpg``; return its length.

        :raises VerificationError: ``gpg`` stopped early (its reason says why).
        """
        chunk = bytes(data)
        self._input.add(chunk)
        try:
            self._stdin.write(chunk)
        except (BrokenPipeError, ValueError):
            # gpg gave up (a tampered message, no key...): the real reason is in its status output.
            self._close_and_check()
            raise VerificationError(f"gpg stopped reading the {self._mode}ion input early") from None
        return len(chunk)

    def close(self) -> None:
        """End the input, wait for ``gpg``, check its verdict, and set :attr:`result` (or raise)."""
        if self.result is None:
            self.result = self._close_and_check()

    def abort(self) -> None:
        """Kill ``gpg`` and reap it (the sink holds something incomplete: the caller deletes it)."""
        with contextlib.suppress(OSError):
            self._proc.kill()
        self._reap()

    def _reap(self) -> int:
        with contextlib.suppress(OSError, ValueError):
            self._stdin.close()
        rc = self._proc.wait()
        for t in self._threads:
            t.join()
        return rc

    def _close_and_check(self) -> PGPResult:
        rc = self._reap()
        if self._sink_error is not None:
            if isinstance(self._sink_error, SecureTransferError):
                raise self._sink_error
            raise VerificationError(
                f"could not write the {self._mode}ed output: {type(self._sink_error).__name__}: {self._sink_error}"
            ) from self._sink_error
        if self._too_big:
            raise VerificationError(
                f"the decrypted data exceeds max_output={self._max_output} bytes (a compression bomb?); stopped"
            )
        return self._finish(rc, self._status, self._stderr.decode("utf-8", "replace"), self._input, self._output)

    def __enter__(self) -> PGPStream:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class _Finisher:
    """Turn gpg's exit code and status lines into a :class:`PGPResult` or an error (one per direction)."""

    def __call__(self, rc: int, status: list[str], stderr: str, fed: _Counter, out: _Counter) -> PGPResult:
        raise NotImplementedError


def _status_words(status: list[str]) -> list[list[str]]:
    return [line.split()[1:] for line in status if line.startswith("[GNUPG:] ") and len(line.split()) > 1]


def _gpg_reason(status: list[list[str]], stderr: str) -> str:
    """The most useful short explanation from gpg's status and (last) stderr lines."""
    interesting = [
        " ".join(w[:3])
        for w in status
        if w[0] in ("ERROR", "FAILURE", "DECRYPTION_FAILED", "NO_SECKEY", "BADMDC", "NODATA", "BAD_PASSPHRASE")
    ]
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip().startswith("gpg:")]
    return "; ".join(interesting[:4] + lines[-2:]) or "no reason given"


class _EncryptFinisher(_Finisher):
    def __init__(self, recipients: tuple[str, ...], signer: str | None) -> None:
        self.recipients = recipients
        self.signer = signer

    def __call__(self, rc: int, status: list[str], stderr: str, fed: _Counter, out: _Counter) -> PGPResult:
        words = _status_words(status)
        if rc != 0 or not any(w[0] == "END_ENCRYPTION" for w in words):
            if any(w[0] == "BAD_PASSPHRASE" for w in words):
                raise SecurityPolicyError("the passphrase does not open the signing key (the connection's password)")
            raise SecurityPolicyError(f"gpg could not encrypt (exit {rc}): {_gpg_reason(words, stderr)}")
        if self.signer is not None and not any(w[0] == "SIG_CREATED" for w in words):
            raise SecurityPolicyError(f"gpg did not sign the message: {_gpg_reason(words, stderr)}")
        return PGPResult(
            plaintext_bytes=fed.count,
            plaintext_sha256=fed.hash.hexdigest(),
            ciphertext_bytes=out.count,
            ciphertext_sha256=out.hash.hexdigest(),
            signer=self.signer,
            recipients=self.recipients,
        )


class _DecryptFinisher(_Finisher):
    def __init__(self, verifiers: frozenset[str] | None, names: dict[str, str]) -> None:
        #: Primary fingerprints whose good signature is accepted; ``None``: signatures are not required.
        self.verifiers = verifiers
        self.names = names

    def _signature_verdict(self, words: list[list[str]]) -> tuple[str | None, list[str]]:
        """Return (the accepted signer's fingerprint or None, what was wrong with each other signature)."""
        accepted: str | None = None
        complaints: list[str] = []
        current: dict[str, str] = {}

        def settle() -> None:
            nonlocal accepted
            if not current:
                return
            kind = current.get("kind", "")
            fpr = current.get("primary", current.get("keyid", "?"))
            if kind == "GOODSIG" and current.get("primary") in (self.verifiers or ()):
                accepted = accepted or current["primary"]
            elif kind == "GOODSIG":
                complaints.append(f"a good signature by {fpr}, which is not among the accepted signers")
            elif kind == "EXPKEYSIG":
                complaints.append(f"signed by {fpr}, whose key has expired")
            elif kind == "REVKEYSIG":
                complaints.append(f"signed by {fpr}, whose key is revoked")
            elif kind == "EXPSIG":
                complaints.append(f"a signature by {fpr} that has expired")
            elif kind == "BADSIG":
                complaints.append(f"a BAD signature claiming to be by {fpr} (the data or signature was altered)")
            elif kind == "ERRSIG":
                complaints.append(f"signed by key {fpr}, which is not among the accepted signers")
            else:
                complaints.append(f"an unverifiable signature ({kind or 'no verdict'})")
            current.clear()

        for w in words:
            if w[0] == "NEWSIG":
                settle()
                current["kind"] = ""
            elif w[0] in ("GOODSIG", "EXPKEYSIG", "REVKEYSIG", "EXPSIG", "BADSIG", "ERRSIG"):
                if w[0] == "ERRSIG" and len(w) > 7 and len(w[7]) >= 40:
                    current["primary"] = w[7]  # the issuer fingerprint, when the signature carries one
                current["kind"] = w[0]
                current["keyid"] = w[1] if len(w) > 1 else "?"
            elif w[0] == "VALIDSIG" and len(w) > 10:
                current["primary"] = w[10]
        settle()
        return accepted, complaints

    def __call__(self, rc: int, status: list[str], stderr: str, fed: _Counter, out: _Counter) -> PGPResult:
        words = _status_words(status)
        kinds = {w[0] for w in words}
        if "BEGIN_DECRYPTION" not in kinds:
            if "NODATA" in kinds or not kinds & {"ENC_TO", "PLAINTEXT", "NEWSIG"}:
                raise VerificationError(f"not an OpenPGP message ({_gpg_reason(words, stderr)})")
            raise VerificationError("not an encrypted OpenPGP message (it is only signed or plain); refused")
        if "NO_SECKEY" in kinds and "DECRYPTION_OKAY" not in kinds:
            to = ", ".join(w[1] for w in words if w[0] == "ENC_TO" and len(w) > 1)
            raise VerificationError(
                f"the file is encrypted to key id(s) {to or '?'}, not to the decryption key "
                f"{', '.join(self.names.get('secret', '?').split())}"
            )
        if "BAD_PASSPHRASE" in kinds:
            raise SecurityPolicyError("the passphrase does not open the decryption key (the connection's password)")
        if "DECRYPTION_OKAY" not in kinds or kinds & {"DECRYPTION_FAILED", "BADMDC"} or ("END_DECRYPTION" not in kinds):
            raise VerificationError(
                f"decryption failed: the message is damaged or was tampered with (exit {rc}: "
                f"{_gpg_reason(words, stderr)}); its output must be discarded"
            )
        accepted, complaints = self._signature_verdict(words)
        if self.verifiers is not None and accepted is None:
            why = "; ".join(complaints) if complaints else "the message is not signed"
            raise VerificationError(
                f"no good signature by an accepted key ({', '.join(sorted(self.verifiers))}): {why}; "
                "the decrypted data must be discarded"
            )
        if rc != 0 and not complaints:
            # gpg exits non-zero for a signature it cannot check (explained by complaints, which only
            # matter with verify=True); anything else unexplained fails closed.
            raise VerificationError(f"gpg reported an error while decrypting (exit {rc}: {_gpg_reason(words, stderr)})")
        return PGPResult(
            plaintext_bytes=out.count,
            plaintext_sha256=out.hash.hexdigest(),
            ciphertext_bytes=fed.count,
            ciphertext_sha256=fed.hash.hexdigest(),
            signer=accepted,
        )


# --------------------------------------------------------------------------- the key store


_ARMOR_BLOCK: Final = re.compile(r"(-----BEGIN PGP [A-Z ]+-----)(.*?)(-----END PGP [A-Z ]+-----)", re.S)


def _restore_armor(text: str) -> str:
    """Rebuild armoured blocks pasted on one line (line breaks turned into spaces).

    An armoured key has no spaces inside its base64 lines, so each whitespace-separated token of the
    body is one line; gpg's exports carry no armour headers (``Comment:`` lines would not survive this).
    """

    def rebuild(match: re.Match[str]) -> str:
        body = match.group(2).split()
        return "\n".join([match.group(1), "", *body, match.group(3)]) + "\n"

    blocks = [rebuild(m) for m in _ARMOR_BLOCK.finditer(text)]
    return "".join(blocks) if blocks else text


def _check_text(name: str, text: str | None) -> str | None:
    if text is None:
        return None
    if not isinstance(text, str):
        raise ConfigurationError(f"{name} must be ASCII-armoured text, got {type(text).__name__}")
    text = text.strip()
    if not text:
        return None
    if len(text) > MAX_KEY_TEXT:
        raise ConfigurationError(f"{name} is longer than {MAX_KEY_TEXT} characters")
    # A form may turn line breaks into literal "\n" or (a masked one-line input) into spaces: put them back.
    if "\n" not in text and "\\n" in text:
        text = text.replace("\\n", "\n")
    if "\n" not in text:
        text = _restore_armor(text)
    if "-----BEGIN PGP" not in text:
        raise ConfigurationError(f"{name} must be ASCII-armoured (-----BEGIN PGP ... KEY BLOCK-----)")
    return text


class PGPKeyStore:
    """A private ``gpg`` key store for one task: the given keys only, in a 0700 temporary directory.

    Entering the ``with`` block creates the directory, imports the keys and checks them (unless
    ``check=False``); leaving it stops the store's ``gpg-agent`` and removes the directory, also
    after an error. One store serves many files (each operation is its own ``gpg`` process).

    :param recipients: ASCII-armoured public key(s) to encrypt to (a ``secure_pgp`` connection's
        ``public_keys``): each must be valid, not weak, and have an encryption-capable subkey.
    :param secret_key: one ASCII-armoured secret key (``private_key``), used to sign (upload) or
        to decrypt (download); checked to open with *passphrase*.
    :param passphrase: the secret key's passphrase (the connection's password); never logged,
        never on a command line.
    :param verifiers: ASCII-armoured public key(s) whose signatures are accepted when decrypting
        with ``verify=True`` (``verify_signature_with``'s ``public_keys``); each must be valid and
        signing-capable.
    :param purpose: what *secret_key* is for: ``"sign"`` (needs a signing subkey) or ``"decrypt"``
        (needs an encryption subkey); ``None``: either suffices.
    :param check: refuse expired, revoked and weak keys and a wrong passphrase (default ``True``;
        :func:`inspect_keys` turns it off to describe bad keys too).
    :param tmp_dir: where to make the key store (default: the system's temporary directory).
    :raises ConfigurationError: missing or malformed key text, ``gpg`` missing.
    :raises SecurityPolicyError: an expired, revoked or weak key, no usable subkey for its purpose,
        or a passphrase that does not open the secret key.
    """

    def __init__(
        self,
        *,
        recipients: str | None = None,
        secret_key: str | None = None,
        passphrase: str | None = None,
        verifiers: str | None = None,
        purpose: Literal["sign", "decrypt"] | None = None,
        check: bool = True,
        tmp_dir: str | os.PathLike[str] | None = None,
        now: datetime.datetime | None = None,
    ) -> None:
        self._recipients_text = _check_text("public_keys (recipients)", recipients)
        self._secret_text = _check_text("private_key", secret_key)
        self._verifiers_text = _check_text("public_keys (accepted signers)", verifiers)
        self._passphrase = passphrase or None
        self._purpose = purpose
        self._check = check
        self._tmp_dir = tmp_dir
        self._now = now
        self._home: Path | None = None
        self.recipient_keys: tuple[PGPKeyInfo, ...] = ()
        self.secret_keys: tuple[PGPKeyInfo, ...] = ()
        self.verifier_keys: tuple[PGPKeyInfo, ...] = ()

    def __repr__(self) -> str:
        home = self._home
        return (
            f"PGPKeyStore(home={str(home) if home else None!r}, "
            f"recipients={[k.fingerprint for k in self.recipient_keys]}, "
            f"secret={[k.fingerprint for k in self.secret_keys]}, "
            f"verifiers={[k.fingerprint for k in self.verifier_keys]})"
        )

    # -- lifecycle

    def __enter__(self) -> PGPKeyStore:
        binary = gpg_binary()
        self._gpg = binary
        self._home = Path(tempfile.mkdtemp(prefix="ast-pgp-", dir=self._tmp_dir))
        try:
            os.chmod(self._home, 0o700)
            # No scdaemon, no cached passphrases beyond this store's life (it ends with the store anyway).
            (self._home / "gpg-agent.conf").write_text("disable-scdaemon\nallow-loopback-pinentry\n")
            if self._secret_text:
                # Started here, ready when gpgconf returns: gpg's own autostart polls for it in 1 s steps.
                self._gpgconf("--launch", "gpg-agent")
            now = self._now or datetime.datetime.now(tz=datetime.UTC)
            if self._recipients_text:
                self.recipient_keys = tuple(self._import(self._recipients_text, "public_keys (recipients)"))
            if self._verifiers_text:
                self.verifier_keys = tuple(self._import(self._verifiers_text, "public_keys (accepted signers)"))
            if self._secret_text:
                self.secret_keys = tuple(self._import(self._secret_text, "private_key", secret=True))
                if len(self.secret_keys) != 1:
                    raise ConfigurationError(
                        f"private_key must hold exactly one secret key, it holds {len(self.secret_keys)}"
                    )
            if self._check:
                self._check_keys(now)
        except BaseException as exc:
            self.close()
            scrub_secrets(exc, [self._passphrase])
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
        if exc is not None:
            scrub_secrets(exc, [self._passphrase])

    def close(self) -> None:
        """Stop the store's agent and remove its directory (idempotent; never raises)."""
        home = self._home
        if home is None:
            return
        self._gpgconf("--kill", "all")
        self._home = None
        shutil.rmtree(home, ignore_errors=True)

    def _gpgconf(self, *args: str) -> None:
        """Run ``gpgconf --homedir <store> ARGS`` (start or stop the store's agent); never raises."""
        gpgconf = shutil.which("gpgconf")
        if gpgconf is None or self._home is None:
            return
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(  # noqa: S603 - a fixed command
                [gpgconf, "--homedir", str(self._home), *args],
                env=self._env(self._home),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=_KEY_OP_TIMEOUT,
                check=False,
            )

    @property
    def home(self) -> Path:
        """The store's directory (only while open)."""
        if self._home is None:
            raise ConfigurationError("the PGP key store is not open (use it in a with block)")
        return self._home

    # -- gpg plumbing

    @staticmethod
    def _env(home: Path) -> dict[str, str]:
        # A minimal environment: nothing from the worker's (no GNUPGHOME, no agent info, no HOME keyring).
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GNUPGHOME": str(home),
            "HOME": str(home),
            "LC_ALL": "C",
            "LANG": "C",
        }

    def _argv(self, *args: str) -> list[str]:
        return [
            self._gpg,
            "--homedir",
            str(self.home),
            "--no-options",
            "--batch",
            "--no-tty",
            "--disable-dirmngr",
            "--no-auto-key-retrieve",
            "--no-auto-key-locate",
            "--no-default-recipient",
            "--no-encrypt-to",
            "--no-symkey-cache",
            "--no-greeting",
            # Trust is decided by us (exact fingerprints from the connection), not by a web of trust.
            "--trust-model",
            "always",
            *args,
        ]

    def _run(self, args: list[str], *, stdin: bytes = b"", passphrase: bool = False) -> tuple[int, list[str], str]:
        """Run a short gpg command; return (exit code, status lines, stderr)."""
        sink = _NullSink()
        stream = PGPStream(
            self._argv(*args),
            self._env(self.home),
            sink,
            mode="encrypt",
            passphrase=(self._passphrase or "") if passphrase else None,
            finish=_Collect(),
            max_output=None,
        )
        with contextlib.suppress(VerificationError):
            stream.write(stdin)
        stream.close()
        collected = stream.result
        assert isinstance(collected, _Collected)
        return collected.rc, collected.status, collected.stderr

    def _import(self, text: str, name: str, *, secret: bool = False) -> list[PGPKeyInfo]:
        before = {k.fingerprint for k in self._list(secret=False)}
        _, status, stderr = self._run(["--import", "--import-options", "import-minimal"], stdin=text.encode())
        words = _status_words(status)
        imported = {w[2] for w in words if w[0] == "IMPORT_OK" and len(w) > 2}
        if not imported:
            raise ConfigurationError(f"{name} holds no OpenPGP key gpg can read ({_gpg_reason(words, stderr)})")
        has_secret = {w[2] for w in words if w[0] == "IMPORT_OK" and len(w) > 2 and int(w[1]) & 16}
        if secret and not has_secret:
            raise ConfigurationError(f"{name} holds no secret key (only public keys: those go in public_keys)")
        if not secret and has_secret:
            raise SecurityPolicyError(
                f"{name} holds secret key material: put public keys there, and our secret key in private_key"
            )
        keys = self._list(secret=secret)
        wanted = [k for k in keys if k.fingerprint in imported and (secret or k.fingerprint not in before)]
        return wanted or [k for k in keys if k.fingerprint in imported]

    def _list(self, *, secret: bool) -> list[PGPKeyInfo]:
        """List the store's keys (the listing is small; a failed listing lists nothing)."""
        args = ["--with-colons", "--fixed-list-mode", "--with-fingerprint", "--with-fingerprint"]
        proc = subprocess.run(  # noqa: S603 - fixed options only
            self._argv(*args, "--list-secret-keys" if secret else "--list-keys"),
            env=self._env(self.home),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_KEY_OP_TIMEOUT,
            check=False,
        )
        return _parse_colons(proc.stdout.decode("utf-8", "replace"), secret=secret) if proc.returncode == 0 else []

    def _check_keys(self, now: datetime.datetime) -> None:
        for keys, purpose in (
            (self.recipient_keys, "encrypt"),
            (self.verifier_keys, "verify"),
        ):
            for key in keys:
                problems = key.problems(now, purpose=purpose)  # type: ignore[arg-type]
                if problems:
                    raise SecurityPolicyError(
                        f"{'recipient' if purpose == 'encrypt' else 'signer'} key {key.fingerprint} "
                        f"({', '.join(key.user_ids) or 'no user id'}) is refused: {'; '.join(problems)}"
                    )
        for key in self.secret_keys:
            purposes: list[Literal["sign", "decrypt"]] = [self._purpose] if self._purpose else []
            if not purposes:
                purposes = ["sign"] if key.usable_for("s", now) else ["decrypt"]
            for purpose in purposes:
                problems = key.problems(now, purpose=purpose)
                if problems:
                    raise SecurityPolicyError(
                        f"secret key {key.fingerprint} ({', '.join(key.user_ids) or 'no user id'}) cannot "
                        f"{purpose}: {'; '.join(problems)}"
                    )
            self._check_passphrase(key, now)

    def _check_passphrase(self, key: PGPKeyInfo, now: datetime.datetime) -> None:
        """Prove the passphrase opens the secret key: sign (or decrypt) a few bytes with it."""
        if key.usable_for("s", now):
            args = ["--local-user", key.fingerprint, "--sign", "--output", "-"]
            rc, status, stderr = self._run(args, stdin=b"passphrase check", passphrase=True)
            words = _status_words(status)
            ok = rc == 0 and any(w[0] == "SIG_CREATED" for w in words)
        else:
            sink = _BytesSink()
            with self._stream(sink, ["--encrypt", "--recipient", key.fingerprint], "encrypt", None, _Collect()) as s:
                s.write(b"passphrase check")
            rc, status, stderr = self._run(["--decrypt"], stdin=sink.data, passphrase=True)
            words = _status_words(status)
            ok = rc == 0 and any(w[0] == "DECRYPTION_OKAY" for w in words)
        if not ok:
            if any(w[0] in ("BAD_PASSPHRASE", "MISSING_PASSPHRASE") for w in words) or (
                "passphrase" in stderr.lower() or "bad passphrase" in stderr.lower()
            ):
                raise SecurityPolicyError(
                    f"the passphrase (the connection's password) does not open secret key {key.fingerprint}"
                )
            raise SecurityPolicyError(f"secret key {key.fingerprint} cannot be used: {_gpg_reason(words, stderr)}")

    def _stream(
        self,
        sink: BinarySink,
        args: list[str],
        mode: Literal["encrypt", "decrypt"],
        passphrase: str | None,
        finish: _Finisher,
        max_output: int | None = None,
    ) -> PGPStream:
        return PGPStream(
            self._argv(*args, "--output", "-"),
            self._env(self.home),
            sink,
            mode=mode,
            passphrase=passphrase,
            finish=finish,
            max_output=max_output,
        )

    # -- the public operations

    def encryptor(
        self, sink: BinarySink, *, sign: bool = False, armor: bool = False, compress: bool = True
    ) -> PGPStream:
        """Start encrypting to every recipient key (and signing with the secret key): write plaintext into it.

        :param sink: a binary file object that receives the OpenPGP message as it is made.
        :param sign: sign inside the encrypted message with the secret key (``sign_with``).
        :param armor: ASCII armour (``.asc``) instead of binary (``.pgp``).
        :param compress: let ``gpg`` compress as the recipients' keys prefer (default, what ``gpg -e``
            does); ``False``: ``--compress-algo none``, about 6x faster on data that does not compress
            (already compressed or encrypted files; BENCHMARKS.md) and no size-based compression oracle.
        :returns: a :class:`PGPStream`; use it in a ``with`` block, read ``.result`` after it.
        :raises ConfigurationError: no recipient key, or ``sign`` without a secret key.
        """
        if not self.recipient_keys:
            raise ConfigurationError("no recipient public key to encrypt to (encrypt_with's public_keys)")
        args: list[str] = ["--encrypt"]
        for key in self.recipient_keys:
            args += ["--recipient", key.fingerprint]
        signer: str | None = None
        if sign:
            if not self.secret_keys:
                raise ConfigurationError("sign=True needs a secret key (sign_with's private_key)")
            signer = self.secret_keys[0].fingerprint
            args += ["--sign", "--local-user", signer]
        if armor:
            args.append("--armor")
        if not compress:
            args += ["--compress-algo", "none"]
        finish = _EncryptFinisher(tuple(k.fingerprint for k in self.recipient_keys), signer)
        return self._stream(sink, args, "encrypt", (self._passphrase or "") if sign else None, finish)

    def decryptor(self, sink: BinarySink, *, verify: bool = False, max_output: int | None = None) -> PGPStream:
        """Start decrypting with the secret key: write the OpenPGP message into it, plaintext goes to *sink*.

        **The sink receives plaintext before the message is proven whole and signed**: let it be a
        temporary file; rename it only after the ``with`` block ends without an exception.

        :param verify: require a good signature by one of the verifier keys (``verify_signature_with``).
        :param max_output: stop (``VerificationError``) when the plaintext grows past this many bytes
            (a compressed message can expand a thousandfold); ``None``: no limit.
        :raises ConfigurationError: no secret key, or ``verify`` without verifier keys.
        """
        if not self.secret_keys:
            raise ConfigurationError("decrypting needs our secret key (decrypt_with's private_key)")
        verifiers: frozenset[str] | None = None
        if verify:
            if not self.verifier_keys:
                raise ConfigurationError("verify=True needs the signers' public keys (verify_signature_with)")
            verifiers = frozenset(k.fingerprint for k in self.verifier_keys)
        names = {"secret": self.secret_keys[0].fingerprint}
        finish = _DecryptFinisher(verifiers, names)
        # --no-use-embedded-filename (the default, stated): the message never names a file gpg writes.
        args = ["--decrypt", "--no-use-embedded-filename"]
        return self._stream(sink, args, "decrypt", self._passphrase or "", finish, max_output)

    def encrypt(
        self, source: Source, sink: Source, *, sign: bool = False, armor: bool = False, compress: bool = True
    ) -> PGPResult:
        """Encrypt *source* (path or binary file object) into *sink* (path or binary file object).

        A sink path is written in place (give a temporary path; the caller renames).

        :returns: sizes and SHA-256 of both the plaintext and the ciphertext.
        """
        with _opened(source, "rb") as src, _opened(sink, "wb") as out:
            with self.encryptor(out, sign=sign, armor=armor, compress=compress) as stream:
                _copy(src, stream)
        assert stream.result is not None
        return stream.result

    def decrypt(
        self, source: Source, sink: Source, *, verify: bool = False, max_output: int | None = None
    ) -> PGPResult:
        """Decrypt *source* into the temporary *sink*; return only when decryption (and *verify*) succeeded.

        On any error the sink holds unverified data: a sink *path* is deleted here, a file object is
        the caller's to discard. See :meth:`decryptor` for *verify* and *max_output*.

        :raises VerificationError: not decryptable with our key, damaged/tampered, or no good
            signature by an accepted key (with *verify*).
        """
        try:
            with _opened(source, "rb") as src, _opened(sink, "wb") as out:
                with self.decryptor(out, verify=verify, max_output=max_output) as stream:
                    _copy(src, stream)
        except BaseException:
            if isinstance(sink, (str, os.PathLike)):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(sink)
            raise
        assert stream.result is not None
        return stream.result


# --------------------------------------------------------------------------- helpers


@dataclasses.dataclass(frozen=True)
class _Collected(PGPResult):
    rc: int = 0
    status: list[str] = dataclasses.field(default_factory=list)
    stderr: str = ""


class _Collect(_Finisher):
    """A finisher that judges nothing: returns the exit code, status lines and stderr."""

    def __call__(self, rc: int, status: list[str], stderr: str, fed: _Counter, out: _Counter) -> PGPResult:
        return _Collected(
            fed.count, fed.hash.hexdigest(), out.count, out.hash.hexdigest(), None, (), rc, status, stderr
        )


class _NullSink:
    def write(self, data: bytes) -> int:
        return len(data)


class _BytesSink:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> int:
        if len(self.data) < MAX_KEY_TEXT:
            self.data += data
        return len(data)


@contextlib.contextmanager
def _opened(target: Source, mode: Literal["rb", "wb"]) -> Iterator[IO[bytes]]:
    if isinstance(target, (str, os.PathLike)):
        with open(target, mode) as f:
            yield f
    else:
        yield target


def _copy(src: IO[bytes], stream: PGPStream) -> None:
    while True:
        chunk = src.read(_CHUNK)
        if not chunk:
            return
        stream.write(chunk)


def fingerprints(keys: Sequence[PGPKeyInfo]) -> list[str]:
    """The primary fingerprints of *keys*."""
    return [k.fingerprint for k in keys]
