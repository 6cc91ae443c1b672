"""The upload options every entry point checks early (the operator's constructor, at DAG parse time).

A module of its own so that checking them imports nothing else of the engine.
"""

from __future__ import annotations

from typing import Final

from airflow_secure_transfer.exceptions import ConfigurationError

__all__ = ["OVERWRITE_MODES", "VERIFY_MODES", "validate_options"]

#: ``replace``: an existing target is replaced (atomically, by the rename);
#: ``skip_identical``: a target of the same size (and checksum, when the server has one) is left alone;
#: ``fail``: an existing target is an error, raised before any byte is sent.
OVERWRITE_MODES: Final = ("replace", "skip_identical", "fail")
#: ``size``: the uploaded size is checked (always done);
#: ``checksum``: also a server-computed digest, compared with the local one; a server without one is an error.
VERIFY_MODES: Final = ("size", "checksum")


def validate_options(*, overwrite: str, verify: str, max_connections: int | None) -> None:
    """Check the engine's options; raise :class:`ConfigurationError` naming the accepted values."""
    if overwrite not in OVERWRITE_MODES:
        raise ConfigurationError(f"overwrite must be one of {', '.join(map(repr, OVERWRITE_MODES))}, got {overwrite!r}")
    if verify not in VERIFY_MODES:
        raise ConfigurationError(f"verify must be one of {', '.join(map(repr, VERIFY_MODES))}, got {verify!r}")
    if max_connections is not None and (
        isinstance(max_connections, bool) or not isinstance(max_connections, int) or not 1 <= max_connections <= 64
    ):
        raise ConfigurationError(f"max_connections must be a whole number from 1 to 64, got {max_connections!r}")
