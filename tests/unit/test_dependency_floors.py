"""The dependency ranges in pyproject.toml exclude every release with a known advisory (issue #12, item 12).

The ranges are read from pyproject.toml (what a user's resolver sees), not from the installed
distribution: the shared test environment is installed from another checkout.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]


def _requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = (Requirement(line) for line in project["dependencies"])
    return {r.name.lower(): r for r in reqs}


def _pinned(name: str) -> Version:
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.lower().startswith(f"{name}=="):
            return Version(line.split("==", 1)[1].strip())
    raise AssertionError(f"{name} is not pinned in constraints.txt")


# Releases with a published advisory, and the advisory (the newest vulnerable release of each range).
VULNERABLE = {
    "asyncssh": {
        "2.14.0": "CVE-2023-46445/CVE-2023-46446 (rogue session), fixed in 2.14.1",
        "2.14.1": "CVE-2023-48795 (Terrapin), fixed in 2.14.2",
        "2.23.0": "CVE-2026-54590/CVE-2026-54591 (SCP path traversal), GHSA-qr67-gv47-xwwh, fixed in 2.23.1",
    },
    "cryptography": {
        "42.0.3": "CVE-2024-26130 (PKCS#12 NULL dereference), fixed in 42.0.4",
        "43.0.0": "GHSA-h4gh-qq45-vh27 (OpenSSL in the wheels), fixed in 43.0.1",
        "44.0.0": "CVE-2024-12797 (OpenSSL in the wheels), fixed in 44.0.1",
        "48.0.0": "GHSA-537c-gmf6-5ccf (OpenSSL in the wheels), fixed in 48.0.1",
        "49.0.0": "CVE-2026-69247 (PKCS#7 Bleichenbacher oracle), fixed in 50.0.0",
    },
}


@pytest.mark.parametrize(
    ("name", "version"),
    [(name, version) for name, versions in VULNERABLE.items() for version in versions],
)
def test_vulnerable_releases_are_excluded(name: str, version: str) -> None:
    requirement = _requirements()[name]
    assert not requirement.specifier.contains(version), (
        f"pyproject.toml allows {name} {version}: {VULNERABLE[name][version]} ({requirement})"
    )


@pytest.mark.parametrize("name", ["asyncssh", "cryptography"])
def test_the_tested_release_is_allowed(name: str) -> None:
    assert _requirements()[name].specifier.contains(_pinned(name))


def test_asyncssh_is_capped_at_the_tested_minor() -> None:
    """transfer/sftp.py reaches into asyncssh's SFTP handler: an untested minor must not be installed."""
    tested = _pinned("asyncssh")
    spec = _requirements()["asyncssh"].specifier
    assert spec.contains(f"{tested.major}.{tested.minor}.99")
    assert not spec.contains(f"{tested.major}.{tested.minor + 1}.0")
    assert not spec.contains(f"{tested.major + 1}.0.0")


def test_cryptography_floor_fits_every_supported_airflow() -> None:
    """apache-airflow-core 3.1.x-3.3.x require cryptography>=41.0.0 with no ceiling; our floor stays within."""
    spec = _requirements()["cryptography"].specifier
    floor = min(Version(s.version) for s in spec if s.operator in (">=", "=="))
    assert floor >= Version("50.0.0")
    assert Requirement("cryptography>=41.0.0").specifier.contains(floor)
