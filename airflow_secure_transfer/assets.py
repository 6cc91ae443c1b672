"""Asset URI handling for the ``ftps`` scheme (``asset-uris`` in the provider info).

``Asset("ftps://partner.example/inbound/a.csv")`` and
``Asset("ftps://partner.example:990/inbound/a.csv")`` name the same file, so the
handler writes the default port into the URI. The default is **990**, the port
IANA assigns to ``ftps`` and the one ``curl`` and ``lftp`` use for ``ftps://``
URLs. An explicit-TLS server on port 21 is therefore ``ftps://host:21/path`` --
which is exactly what :class:`~airflow_secure_transfer.operators.upload.SecureUploadOperator`
reports as lineage (it always writes the port).

``sftp://`` is already handled by the stock SFTP provider (default port 22).

This module imports Airflow lazily: the providers manager imports it to look up
the handler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from urllib.parse import SplitResult

__all__ = ["FTPS_DEFAULT_PORT", "convert_asset_to_openlineage", "create_asset", "sanitize_uri"]

FTPS_DEFAULT_PORT = 990


def sanitize_uri(uri: SplitResult) -> SplitResult:
    """Normalise an ``ftps://`` asset URI: a host is required, the default port is made explicit.

    :raises ValueError: no host, a malformed port, or no path (Airflow reports it at DAG parse time).
    """
    if not uri.hostname:
        raise ValueError("URI format ftps:// must contain a host")
    try:
        port = uri.port
    except ValueError:
        raise ValueError(f"URI format ftps:// has an invalid port in {uri.netloc!r}") from None
    if uri.username or uri.password:
        raise ValueError("URI format ftps:// must not contain credentials; put them in a connection")
    if port is None:
        host = uri.netloc.rstrip(":")
        uri = uri._replace(netloc=f"{host}:{FTPS_DEFAULT_PORT}")
    if not uri.path or uri.path == "/":
        raise ValueError("URI format ftps:// must contain a path")
    return uri


def create_asset(*, host: str, path: str, port: int = FTPS_DEFAULT_PORT, extra: dict[str, Any] | None = None) -> Any:
    """Return ``Asset("ftps://host:port/path")``."""
    from airflow.sdk import Asset

    return Asset(uri=f"ftps://{host}:{port}/{path.lstrip('/')}", extra=extra)


def convert_asset_to_openlineage(asset: Any, lineage_context: Any) -> Any:
    """Translate an ``ftps://`` asset into an OpenLineage dataset (namespace ``ftps://host:port``)."""
    from urllib.parse import urlsplit

    from airflow.providers.common.compat.openlineage.facet import Dataset as OpenLineageDataset

    parsed = urlsplit(asset.uri)
    return OpenLineageDataset(namespace=f"ftps://{parsed.netloc}", name=parsed.path or "/")
