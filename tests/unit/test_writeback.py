"""EarlyWriteback: a large download's partial is synced while it arrives; a sync's error is not lost."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest

from airflow_secure_transfer.transfer import writeback
from airflow_secure_transfer.transfer.writeback import EarlyWriteback

#: Only a guard against a hung test, never a speed limit.
HANG_GUARD_S = 60


def test_syncs_the_file_after_every_threshold_and_not_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    done = threading.Event()
    real = writeback._datasync

    def spy(fd: int) -> None:
        real(fd)
        synced.append(fd)
        done.set()

    monkeypatch.setattr(writeback, "_datasync", spy)
    with open(tmp_path / "part", "wb") as f, EarlyWriteback(f.fileno(), every=1000) as wb:
        f.write(b"x" * 999)
        wb.wrote(999)
        assert not done.wait(0.2)  # below the threshold: no sync yet
        f.write(b"x")
        wb.wrote(1)
        assert done.wait(HANG_GUARD_S)
        done.clear()
        f.write(b"y" * 2500)
        wb.wrote(2500)
        assert done.wait(HANG_GUARD_S)
        wb.finish()
        assert set(synced) == {f.fileno()}
        assert wb.syncs == len(synced) == 2


def _failing_datasync(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Make every early sync fail with EIO; the event is set once one was tried."""
    tried = threading.Event()

    def failing(fd: int) -> None:
        tried.set()
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(writeback, "_datasync", failing)
    return tried


def test_an_early_sync_error_is_raised_by_finish(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tried = _failing_datasync(monkeypatch)
    with open(tmp_path / "part", "wb") as f, EarlyWriteback(f.fileno(), every=10) as wb:
        wb.wrote(10)
        assert tried.wait(HANG_GUARD_S)
        wb.wrote(10)  # the helper has stopped: counting goes on, nothing blocks
        with pytest.raises(OSError) as info:
            wb.finish()
        assert info.value.errno == errno.EIO


def test_the_helper_ends_with_the_block_even_when_the_writer_fails(tmp_path: Path) -> None:
    with open(tmp_path / "part", "wb") as f:
        wb = EarlyWriteback(f.fileno(), every=10)
        with pytest.raises(RuntimeError, match="cut"), wb:
            wb.wrote(25)
            raise RuntimeError("cut")
        assert not wb._thread.is_alive()
    wb.finish()  # idempotent after the block; no error was seen


def test_no_thread_without_enter_and_bad_threshold_refused(tmp_path: Path) -> None:
    with open(tmp_path / "part", "wb") as f:
        wb = EarlyWriteback(f.fileno())
        wb.finish()  # never started: nothing to join
        with pytest.raises(ValueError, match="every must be > 0"):
            EarlyWriteback(f.fileno(), every=0)


def test_clean_tells_whether_the_bytes_so_far_were_written_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cut download keeps its partial for a resume only when no early sync failed (clean() decides)."""
    with open(tmp_path / "part", "wb") as f, EarlyWriteback(f.fileno(), every=10) as wb:
        wb.wrote(10)
        assert wb.clean()
    tried = _failing_datasync(monkeypatch)
    with open(tmp_path / "part", "wb") as f, EarlyWriteback(f.fileno(), every=10) as wb:
        wb.wrote(10)
        assert tried.wait(HANG_GUARD_S)
        assert not wb.clean()
