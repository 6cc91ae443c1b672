"""Tests of the FTPS client (``transfer/ftps.py``), TLS policy and ``SecureFTPSHook`` against real servers."""
