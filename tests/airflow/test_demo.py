"""``make demo`` works: the demo entry point runs end to end in a clean work directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.airflow, pytest.mark.slow]


def test_demo_entry_point(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW__", "AIRFLOW_HOME"))}
    proc = subprocess.run(
        [sys.executable, "-m", "airflow_secure_transfer.demo", "--workdir", str(workdir)],
        env=env,
        cwd=tmp_path,  # not the repository: the demo finds the example DAGs itself
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:] + proc.stderr[-4000:]
    assert re.search(r"upload_ftps: 8 files, \d+ bytes sent, all verified: True", out)
    assert re.search(r"upload_sftp: 6 files, \d+ bytes sent, all verified: True", out)
    assert re.search(r"move_sftp: 8 files, \d+ bytes sent, all verified: True", out)
    assert "deleted its sources after verified upload: 0 files left" in out
    # Where the files landed: listed, and really there.
    ftps_root = workdir / "ftps-server-root"
    landed = sorted(p.relative_to(ftps_root).as_posix() for p in ftps_root.rglob("*") if p.is_file())
    assert "upload/secure_upload_example/ftps/export-archive.bin" in landed and len(landed) == 8
    for rel in landed:
        assert rel in out
    # The connections pinned the servers' CA and host key; no password was printed.
    assert "CA pinned" in out and "host key pinned" in out
    assert "password" not in out.lower()
