"""The ``ftps`` asset URI handler: default port, required host and path, no credentials."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import pytest

from airflow_secure_transfer import get_provider_info
from airflow_secure_transfer.assets import convert_asset_to_openlineage, create_asset, sanitize_uri


def _norm(uri: str) -> str:
    return urlunsplit(sanitize_uri(urlsplit(uri)))


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("ftps://partner.example/inbound/a.csv", "ftps://partner.example:990/inbound/a.csv"),
        ("ftps://partner.example:/inbound/a.csv", "ftps://partner.example:990/inbound/a.csv"),
        ("ftps://partner.example:990/inbound/a.csv", "ftps://partner.example:990/inbound/a.csv"),
        ("ftps://partner.example:21/inbound/a.csv", "ftps://partner.example:21/inbound/a.csv"),
        ("ftps://[::1]/x", "ftps://[::1]:990/x"),
    ],
)
def test_default_port_is_made_explicit(uri: str, expected: str) -> None:
    assert _norm(uri) == expected


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("ftps:///inbound/a.csv", "must contain a host"),
        ("ftps://partner.example", "must contain a path"),
        ("ftps://partner.example/", "must contain a path"),
        ("ftps://user:secret@partner.example/a", "must not contain credentials"),
        ("ftps://partner.example:99999/a", "invalid port"),
    ],
)
def test_malformed_uris_are_refused(uri: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sanitize_uri(urlsplit(uri))


def test_factory_and_openlineage_conversion() -> None:
    asset = create_asset(host="h.example", path="/in/a.csv", port=21)
    assert asset.uri == "ftps://h.example:21/in/a.csv"
    dataset = convert_asset_to_openlineage(asset, None)
    # Without the OpenLineage client the compat layer returns None; with it, a Dataset.
    if dataset is not None:
        assert (dataset.namespace, dataset.name) == ("ftps://h.example:21", "/in/a.csv")


def test_the_provider_registers_the_handler_so_assets_are_normalised() -> None:
    entries = [e for e in get_provider_info().get("asset-uris", []) if "ftps" in e.get("schemes", [])]
    assert entries, "get_provider_info() needs an asset-uris entry for 'ftps' (see the operator issue)"
    assert entries[0]["handler"] == "airflow_secure_transfer.assets.sanitize_uri"
    from airflow.sdk import Asset

    assert Asset("ftps://partner.example/in/a.csv").uri == "ftps://partner.example:990/in/a.csv"
