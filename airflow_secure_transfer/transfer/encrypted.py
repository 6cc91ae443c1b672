"""Encrypted uploads: local files -> OpenPGP ciphertext kept for resume -> the ordinary upload engine.

Why a staged ciphertext file and not a pipe into the upload: OpenPGP encryption is randomised (a fresh
session key each time), so encrypting again after a cut connection would give *different* bytes, and
resuming a partial with them would corrupt the file. So each file is encrypted once, streaming (bounded
memory: ``gpg`` in a child process), into a private per-task directory, and that file is what the
engine uploads, verifies (size, and ``verify="checksum"``: the digest of the ciphertext sent) and
renames. A retried task finds the same ciphertext and the same partial name, and resumes it.

Layout (``0700`` directories owned by the worker user, never followed through a symlink)::

    $TMPDIR/airflow-secure-transfer-pgp-<uid>/       the base, checked before use
        <sha256(task identity)[:24]>/                 one per task (dag, task, run, map index, target)
            <generation>-<random>/                    sha256 of the sources' identity + keys + armour,
                                                      and a random part new with each encryption
                data/<relpath>.pgp                    the ciphertext, mtime = the source's
                done.json                             written when every file is encrypted

A changed source, recipient set, signer or ``armor`` gives a new generation, and so does any new
encryption (a try on another worker, a lost staging directory): new local paths, so new partial names on
the server, so a partial made from other ciphertext is never continued. Older
generations of the task are deleted. The task directory is removed after a successful upload and
after a non-retryable failure (:func:`discard_staging`); it stays after a retryable one, and is removed by
a later encrypted upload on the worker once untouched for :data:`STALE_AFTER` (7 days).

Plaintext never touches this directory: only ciphertext does (and ``.tmp`` ciphertext while it is
being written).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import secrets
import shutil
import stat
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Final

from airflow_secure_transfer.exceptions import IntegrityError, SecurityPolicyError
from airflow_secure_transfer.transfer.local import LocalFile, LocalSource, expand_local, open_unchanged

if TYPE_CHECKING:
    from airflow_secure_transfer.security.pgp import PGPKeyStore

__all__ = [
    "STALE_AFTER",
    "StagedFile",
    "StagedUpload",
    "discard_staging",
    "stage_encrypted",
    "staging_base",
    "staging_path",
    "task_staging_dir",
]

#: A task's staging directory not touched for this long (7 days) is removed by the next encrypted upload
#: on the worker: its task failed and was not retried (retries come within Airflow's retry delays).
STALE_AFTER: Final = 7 * 24 * 3600


@dataclasses.dataclass(frozen=True)
class StagedFile:
    """One source file and its ciphertext, ready to upload.

    :param source: the local plaintext file (as planned).
    :param cipher_path: absolute path of its ciphertext in the staging directory.
    :param plaintext_sha256: SHA-256 of the plaintext (the record's ``sha256``).
    :param ciphertext_sha256: SHA-256 of the ciphertext (the record's ``remote_sha256``).
    """

    source: LocalFile
    cipher_path: str
    plaintext_sha256: str
    ciphertext_sha256: str


@dataclasses.dataclass(frozen=True)
class StagedUpload:
    """What to hand to :func:`~airflow_secure_transfer.transfer.engine.upload` instead of the sources.

    :param local_path: the ciphertext file (one source file) or the directory holding the ciphertext
        tree (several), so the engine plans the same remote names plus the suffix.
    :param files: the staged files, by ciphertext path.
    :param reused: how many ciphertext files an earlier try of the task had already made.
    """

    local_path: str
    files: dict[str, StagedFile]
    task_dir: Path
    reused: int = 0


def _private_dir(path: Path) -> Path:
    """Create *path* 0700 if missing; refuse it unless it is a real directory of ours, private."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise SecurityPolicyError(
            f"{path} must be a directory owned by this user with mode 0700 (it holds ciphertext being "
            "uploaded); remove it or fix its owner and mode"
        )
    return path


def task_staging_dir(task_identity: str, base: str | os.PathLike[str] | None = None) -> Path:
    """Return (creating it) the private staging directory of one task.

    :param task_identity: what makes the task and its target unique (dag, task, run, map index,
        connection, remote path); retries of the task give the same string.
    :param base: where to put the per-user base directory (default: the system's temporary directory).
    :raises SecurityPolicyError: the base or task directory exists but is not private and ours.
    """
    path = staging_path(task_identity, base)
    _discard_stale(_private_dir(path.parent))
    return _private_dir(path)


def staging_base() -> Path:
    """Where the per-user staging directory is made: the system's temporary directory (``$TMPDIR``)."""
    return Path(tempfile.gettempdir())


def staging_path(task_identity: str, base: str | os.PathLike[str] | None = None) -> Path:
    """The staging directory :func:`task_staging_dir` uses for *task_identity* (not created here)."""
    root = Path(base) if base is not None else staging_base()
    digest = hashlib.sha256(task_identity.encode("utf-8", "surrogateescape")).hexdigest()[:24]
    return root / f"airflow-secure-transfer-pgp-{os.getuid()}" / digest


def _discard_stale(root: Path) -> None:
    """Remove task directories untouched for :data:`STALE_AFTER` seconds (a failed task never retried)."""
    limit = time.time() - STALE_AFTER
    for entry in root.iterdir():
        with contextlib.suppress(OSError):
            st = os.lstat(entry)
            if st.st_mtime < limit:
                discard_staging(entry) if stat.S_ISDIR(st.st_mode) else entry.unlink()


def discard_staging(task_dir: Path) -> None:
    """Remove a task's staging directory (after success, or a failure no retry can fix)."""
    shutil.rmtree(task_dir, ignore_errors=True)


def _generation(files: list[LocalFile], store: PGPKeyStore, sign: bool, armor: bool) -> str:
    identity = {
        "files": [(f.path, f.relpath, f.size, f.mtime_ns) for f in files],
        "recipients": sorted(k.fingerprint for k in store.recipient_keys),
        "signer": store.secret_keys[0].fingerprint if sign and store.secret_keys else None,
        "armor": armor,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _encrypt_one(store: PGPKeyStore, f: LocalFile, cipher: Path, *, sign: bool, armor: bool) -> tuple[str, str]:
    """Encrypt *f* into *cipher* (through ``cipher.tmp``); return (plaintext, ciphertext) SHA-256."""
    cipher.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = cipher.with_name(cipher.name + ".tmp")
    src = open_unchanged(f, "nothing was sent")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "wb") as sink:
            result = store.encrypt(src, sink, sign=sign, armor=armor)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    finally:
        src.close()
    now = os.stat(f.path)
    if now.st_size != f.size or now.st_mtime_ns != f.mtime_ns or result.plaintext_bytes != f.size:
        tmp.unlink()
        raise IntegrityError(f"local file {f.path!r} changed while it was being encrypted; nothing was sent")
    # The ciphertext carries the source's modification time: preserve_mtime sets it on the server.
    os.utime(tmp, ns=(now.st_atime_ns, f.mtime_ns))
    os.replace(tmp, cipher)
    return result.plaintext_sha256, result.ciphertext_sha256


def stage_encrypted(
    local_path: LocalSource,
    store: PGPKeyStore,
    task_dir: Path,
    *,
    sign: bool = False,
    armor: bool = False,
    workers: int = 1,
    log: Callable[[str], object] | None = None,
) -> StagedUpload:
    """Encrypt every file of *local_path* into *task_dir* (or reuse an earlier try's ciphertext).

    :param local_path: what the operator's ``local_path`` names (files, directories, globs, lists).
    :param store: an open key store with the recipients (and the signing key when *sign*).
    :param task_dir: from :func:`task_staging_dir`.
    :param sign: sign inside the encrypted message.
    :param armor: ASCII armour and the ``.asc`` suffix instead of binary ``.pgp``.
    :param workers: files encrypted at once (each is one ``gpg`` process).
    :raises LocalPathError: a source is missing or unreadable.
    :raises IntegrityError: a source changed while it was being encrypted (retryable).
    """
    files, single = expand_local(local_path)
    suffix = ".asc" if armor else ".pgp"
    identity = _generation(files, store, sign, armor)
    gen_dir, done = _reusable_generation(task_dir, identity, files, suffix)
    if gen_dir is None:
        # Fresh ciphertext gets a fresh random directory name, so fresh local paths, so fresh partial names
        # on the server: a partial left by other ciphertext (a try on another worker, staging lost) is
        # never continued with these bytes.
        gen_dir = _private_dir(task_dir / f"{identity}-{secrets.token_hex(8)}")
        done = {}
    for old in task_dir.iterdir():
        if old != gen_dir:
            discard_staging(old) if old.is_dir() and not old.is_symlink() else old.unlink()
    data = _private_dir(gen_dir / "data")
    targets = {f.path: data / (f.relpath + suffix) for f in files}
    staged: dict[str, StagedFile] = {}
    if done:
        staged = {str(targets[f.path]): StagedFile(f, str(targets[f.path]), *done[f.relpath]) for f in files}
        return _staged(staged, targets, files, single, data, task_dir, reused=len(staged))
    if log is not None:
        log(f"encrypting {len(files)} file(s) to {', '.join(k.fingerprint for k in store.recipient_keys)}")
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(files) or 1))) as pool:
        futures = {f.path: pool.submit(_encrypt_one, store, f, targets[f.path], sign=sign, armor=armor) for f in files}
        for f in files:
            plain_hex, cipher_hex = futures[f.path].result()
            staged[str(targets[f.path])] = StagedFile(f, str(targets[f.path]), plain_hex, cipher_hex)
    # Written last: a generation is reused only when every file of it was encrypted (before any upload).
    record = {s.source.relpath: [s.plaintext_sha256, s.ciphertext_sha256] for s in staged.values()}
    done_file = gen_dir / "done.json"
    tmp = done_file.with_name("done.json.tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, done_file)
    return _staged(staged, targets, files, single, data, task_dir, reused=0)


def _staged(
    staged: dict[str, StagedFile],
    targets: dict[str, Path],
    files: list[LocalFile],
    single: bool,
    data: Path,
    task_dir: Path,
    *,
    reused: int,
) -> StagedUpload:
    local = str(targets[files[0].path]) if single and files else str(data)
    return StagedUpload(local_path=local, files=staged, task_dir=task_dir, reused=reused)


def _reusable_generation(
    task_dir: Path, identity: str, files: list[LocalFile], suffix: str
) -> tuple[Path | None, dict[str, list[str]]]:
    """An earlier try's complete generation for *identity*: every file encrypted, nothing else in data/."""
    for candidate in task_dir.glob(f"{identity}-*"):
        if candidate.is_symlink() or not candidate.is_dir():
            continue
        try:
            done = json.loads((candidate / "done.json").read_text())
        except (OSError, ValueError):
            continue
        data = candidate / "data"
        wanted = {str(data / (f.relpath + suffix)) for f in files}
        present = {os.path.join(d, n) for d, _dirs, names in os.walk(data) for n in names}
        complete = all(f.relpath in done and len(done[f.relpath]) == 2 for f in files)
        if complete and present == wanted and not any(Path(p).is_symlink() for p in present):
            return candidate, done
    return None, {}
