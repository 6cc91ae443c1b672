"""The upload options every entry point checks early (the operator's constructor, at DAG parse time).

A module of its own so that checking them imports nothing else of the engine.
"""

from __future__ import annotations

from typing import Final

from airflow_secure_transfer.exceptions import ConfigurationError
from airflow_secure_transfer.security.settings import MAX_MAX_CONNECTIONS

__all__ = ["OVERWRITE_MODES", "VERIFY_MODES", "validate_options"]

#: ``replace``: an existing target is replaced (atomically, by the rename);
#: ``skip_identical``: a target is left alone only on proof that it holds the same bytes: same size and
#: the same server checksum where the server offers one, else same size and the same modification time
#: (to the second, the one an earlier upload set with ``preserve_mtime``); otherwise it is uploaded;
#: ``fail``: an existing target is an error, raised before any byte is sent.
OVERWRITE_MODES: Final = ("replace", "skip_identical", "fail")
#: ``size``: the uploaded size is checked (always done);
#: ``checksum``: also a digest of the uploaded bytes compared with the local one before the rename: the
#: server's (HASH/XSHA256..., SFTP check-file) where offered, else the file read back over the same channel.
VERIFY_MODES: Final = ("size", "checksum")


def validate_options(*, overwrite: str, verify: str, max_connections: int | None) -> None:
    """Check the engine's options; raise :class:`ConfigurationError` naming the accepted values."""
    if overwrite not in OVERWRITE_MODES:
        raise ConfigurationError(f"overwrite must be one of {', '.join(map(repr, OVERWRITE_MODES))}, got {overwrite!r}")
    if verify not in VERIFY_MODES:
        raise ConfigurationError(f"verify must be one of {', '.join(map(repr, VERIFY_MODES))}, got {verify!r}")
    if max_connections is not None and (
        isinstance(max_connections, bool)
        or not isinstance(max_connections, int)
        or not 1 <= max_connections <= MAX_MAX_CONNECTIONS
    ):
        raise ConfigurationError(
            f"max_connections must be a whole number from 1 to {MAX_MAX_CONNECTIONS}, got {max_connections!r}"
        )
