"""Delivery receipts: what reached which verified server, for OpenLineage and for asset events.

A *receipt* is one file's public facts after a transfer: its ``size`` and ``sha256``, how its arrival
was ``verified`` (``"checksum"``, ``"size+mtime"``, ``"size"``), the ``protocol`` and the negotiated
security (``tls_version`` + ``cipher`` for FTPS, ``ssh_kex`` + ``ssh_cipher`` for SFTP), the
``server_identity`` that was checked (the certificate's SHA-256 or the host key's ``SHA256:``
fingerprint), whether it ``resumed`` or was ``skipped``, and the ``bytes_sent`` by this run.

* OpenLineage: each output dataset carries the receipt as the custom dataset facet ``secureTransfer``
  (:func:`openlineage_facet`), with a ``_schemaURL`` naming the JSON schema shipped in this package
  (``airflow_secure_transfer/schemas/SecureTransferDatasetFacet.json``, :func:`facet_schema`).
* Asset events: an ``sftp://`` or ``ftps://`` outlet gets the receipt of the file it names, or a
  summary of the files under the directory it names (:func:`asset_event_extra`).

No receipt holds a credential, a key or a passphrase: it is built from the transfer record (paths,
sizes, digests) and the client's ``session_security()`` (public facts of the handshake).

This module imports neither Airflow nor OpenLineage at import time.
"""

from __future__ import annotations

import functools
import json
import posixpath
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any, Final

from airflow_secure_transfer import __version__

if TYPE_CHECKING:
    from airflow_secure_transfer.transfer.base import TransferRecord

__all__ = [
    "FACET_NAME",
    "PRODUCER",
    "SCHEMA_URL",
    "asset_event_extra",
    "facet_schema",
    "openlineage_facet",
    "operator_lineage",
    "receipt",
]

#: The facet's key in a dataset's ``facets``.
FACET_NAME: Final = "secureTransfer"
#: ``_producer`` of the facet: this distribution and its version.
PRODUCER: Final = f"https://pypi.org/project/airflow-provider-secure-transfer/{__version__}/"
_SCHEMA_FILE: Final = "SecureTransferDatasetFacet.json"
#: ``_schemaURL`` of the facet: the schema's ``$id`` (the file shipped in ``airflow_secure_transfer/schemas``)
#: with the facet's definition as fragment, as OpenLineage facets name theirs.
SCHEMA_URL: Final = (
    "https://pypi.org/project/airflow-provider-secure-transfer/schemas/1-0-0/"
    f"{_SCHEMA_FILE}#/$defs/SecureTransferDatasetFacet"
)
#: An asset event that names a directory lists at most this many receipts (the rest are counted).
MAX_RECEIPTS_PER_EVENT: Final = 1000


def facet_schema() -> dict[str, Any]:
    """Return the facet's JSON schema (the file shipped in the package)."""
    text = resources.files("airflow_secure_transfer").joinpath("schemas", _SCHEMA_FILE).read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def receipt(record: TransferRecord, security: Mapping[str, str]) -> dict[str, Any]:
    """Return the delivery receipt of one file (the facet's fields, without ``_producer``/``_schemaURL``).

    :param record: the file's transfer record.
    :param security: the connection's ``session_security()`` (``protocol``, negotiated algorithms,
        ``server_identity``).
    """
    return {
        "size": record.size,
        "sha256": record.sha256,
        "verified": record.verified,
        **{k: security[k] for k in _SECURITY_KEYS[security["protocol"]]},
        "resumed": record.resumed,
        "skipped": record.skipped,
        "bytes_sent": record.bytes,
    }


_SECURITY_KEYS: Final = {
    "ftps": ("protocol", "tls_version", "cipher", "server_identity"),
    "sftp": ("protocol", "ssh_kex", "ssh_cipher", "server_identity"),
}


@functools.cache
def _facet_class() -> type[Any]:
    """The facet as an OpenLineage client class (built on first use: OpenLineage is optional)."""
    import attr
    from openlineage.client.generated.base import DatasetFacet

    @attr.define(kw_only=True)
    class SecureTransferDatasetFacet(DatasetFacet):
        """``secureTransfer``: a delivery receipt (see :mod:`airflow_secure_transfer.lineage`)."""

        size: int
        sha256: str
        verified: str | bool
        protocol: str
        server_identity: str
        resumed: bool
        skipped: bool
        bytes_sent: int
        tls_version: str | None = None
        cipher: str | None = None
        ssh_kex: str | None = None
        ssh_cipher: str | None = None

        @staticmethod
        def _get_schema() -> str:
            return SCHEMA_URL

    return SecureTransferDatasetFacet


def openlineage_facet(fields: Mapping[str, Any]) -> Any:
    """Return the ``secureTransfer`` facet object for a :func:`receipt` (needs the OpenLineage client)."""
    return _facet_class()(producer=PRODUCER, **fields)  # attrs names the init argument of _producer "producer"


def asset_event_extra(
    asset_uri: str,
    endpoint: str,
    records: Sequence[TransferRecord],
    security: Mapping[str, str],
) -> dict[str, Any] | None:
    """Return the asset event ``extra`` for an outlet, or ``None`` when it names none of the files.

    :param asset_uri: the outlet's URI (normalised: ``sftp://host:22/path``, ``ftps://host:990/path``).
    :param endpoint: ``scheme://host:port`` of the server the files went to.
    :returns: ``{"receipt": {...}, "remote_path": ...}`` when the asset names one file that was sent;
        ``{"files": n, "size": ..., "bytes_sent": ..., <security>, "receipts": [...]}`` when it names a
        directory holding sent files (at most :data:`MAX_RECEIPTS_PER_EVENT` receipts, ``truncated``
        says when there were more).
    """
    if not asset_uri.startswith(endpoint + "/"):
        return None
    path = "/" + asset_uri[len(endpoint) :].lstrip("/")
    for record in records:
        if record.remote_path == path:
            return {"remote_path": path, "receipt": receipt(record, security)}
    directory = path.rstrip("/") + "/"
    inside = [r for r in records if r.remote_path.startswith(directory) or directory == "/"]
    if not inside:
        return None
    security_fields = {k: security[k] for k in _SECURITY_KEYS[security["protocol"]]}
    listed = inside[:MAX_RECEIPTS_PER_EVENT]
    return {
        "remote_path": posixpath.normpath(directory),
        "files": len(inside),
        "size": sum(r.size for r in inside),
        "bytes_sent": sum(r.bytes for r in inside),
        **security_fields,
        "receipts": [{"remote_path": r.remote_path, **receipt(r, security)} for r in listed],
        "truncated": len(inside) > len(listed),
    }


def operator_lineage(
    inputs: Sequence[tuple[str, str]],
    outputs: Sequence[tuple[str, str]],
    records: Sequence[TransferRecord],
    security: Mapping[str, str] | None,
    *,
    receipts_on: str,
) -> Any:
    """Return an ``OperatorLineage`` whose remote side carries one receipt per record, or None.

    :param inputs: / :param outputs: ``(namespace, name)`` pairs, one per record, in record order.
    :param receipts_on: ``"outputs"`` (an upload: the remote files are outputs) or ``"inputs"`` (a download).
    :returns: ``None`` when the OpenLineage provider is not installed.
    """
    try:
        from airflow.providers.common.compat.openlineage.facet import Dataset
        from airflow.providers.openlineage.extractors import OperatorLineage
    except ImportError:
        return None

    def datasets(pairs: Sequence[tuple[str, str]], with_receipts: bool) -> list[Any]:
        if not with_receipts or not security:
            return [Dataset(namespace=ns, name=name) for ns, name in pairs]
        return [
            Dataset(namespace=ns, name=name, facets={FACET_NAME: openlineage_facet(receipt(record, security))})
            for (ns, name), record in zip(pairs, records, strict=True)
        ]

    return OperatorLineage(
        inputs=datasets(inputs, receipts_on == "inputs"), outputs=datasets(outputs, receipts_on == "outputs")
    )
