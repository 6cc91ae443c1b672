"""Fixtures of the unit tier's TLS tests (``test_tls.py``, ``test_tls_reader.py``)."""

from __future__ import annotations

import pytest
import trustme


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A throwaway CA, one per test module."""
    return trustme.CA()


@pytest.fixture(scope="module")
def leaf(ca: trustme.CA) -> trustme.LeafCert:
    """A server certificate from :func:`ca` for ``localhost`` and ``127.0.0.1``."""
    return ca.issue_cert("localhost", "127.0.0.1", common_name="localhost")
