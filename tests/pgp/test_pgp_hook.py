"""The ``secure_pgp`` connection type: SecurePGPHook, its Test button, pgp_key_store, masking."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest

from airflow_secure_transfer import PGP_CONN_FIELDS, get_provider_info
from airflow_secure_transfer.exceptions import ConfigurationError, SecurityPolicyError
from airflow_secure_transfer.hooks.pgp import SecurePGPHook, pgp_key_store
from tests.pgp.conftest import ALICE_PASSPHRASE, PGPTestKeys

MakeConn = Callable[..., str]


def test_registered_with_conn_fields() -> None:
    (entry,) = [c for c in get_provider_info()["connection-types"] if c["connection-type"] == "secure_pgp"]
    assert entry["hook-class-name"] == "airflow_secure_transfer.hooks.pgp.SecurePGPHook"
    assert entry["hook-name"] == "PGP keys"
    assert entry["conn-fields"] is PGP_CONN_FIELDS
    assert PGP_CONN_FIELDS["private_key"]["schema"]["format"] == "password"
    assert {"public_keys", "private_key"} <= set(PGP_CONN_FIELDS)
    assert SecurePGPHook.get_ui_field_behaviour()["hidden_fields"] == ["host", "login", "schema"]


def test_test_button_lists_keys(pgp_keys: PGPTestKeys, pgp_conn: MakeConn) -> None:
    conn_id = pgp_conn(
        "partner_ok",
        public_keys=pgp_keys.public["bob"],
        private_key=pgp_keys.secret["alice"],
        password=ALICE_PASSPHRASE,
    )
    ok, message = SecurePGPHook(conn_id).test_connection()
    assert ok, message
    for name in ("bob", "alice"):
        assert pgp_keys.fpr[name] in message
    assert "Bob Partner <bob@example.invalid>" in message and "RSA 3072" in message and "never expires" in message
    assert ALICE_PASSPHRASE not in message


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"public_keys": "expired"}, "expired on 2020-01-02"),
        ({"public_keys": "revoked"}, "revoked"),
        ({"public_keys": "rsa1024"}, "RSA 1024 bits"),
        ({"public_keys": "dsa"}, "DSA"),
        ({"public_keys": "sign_only"}, "no valid encryption-capable (sub)key"),
        ({"private_key": "alice", "password": "wrong passphrase"}, "does not open"),
        ({"private_key": "alice"}, "does not open"),
    ],
)
def test_test_button_fails_on_bad_keys(
    pgp_keys: PGPTestKeys, pgp_conn: MakeConn, kwargs: dict[str, str], fragment: str
) -> None:
    conn_id = pgp_conn(
        "partner_bad",
        public_keys=pgp_keys.public[kwargs["public_keys"]] if "public_keys" in kwargs else None,
        private_key=pgp_keys.secret[kwargs["private_key"]] if "private_key" in kwargs else None,
        password=kwargs.get("password"),
    )
    ok, message = SecurePGPHook(conn_id).test_connection()
    assert not ok
    assert fragment in message
    assert "wrong passphrase" not in message and "PRIVATE KEY BLOCK" not in message


def test_sign_only_key_passes_when_meant_for_verification(pgp_keys: PGPTestKeys, pgp_conn: MakeConn) -> None:
    conn_id = pgp_conn("signer_only", public_keys=pgp_keys.public["sign_only"], public_keys_use="verify")
    ok, message = SecurePGPHook(conn_id).test_connection()
    assert ok, message


def test_strict_extras_and_type(pgp_conn: MakeConn) -> None:
    conn_id = pgp_conn("typo", public_keys="x", pubic_keys="y")
    with pytest.raises(ConfigurationError, match="unknown extra"):
        SecurePGPHook(conn_id).get_conn()
    assert SecurePGPHook(conn_id).test_connection()[0] is False
    conn_id = pgp_conn("wrong_type", public_keys="x", conn_type="secure_sftp")
    with pytest.raises(ConfigurationError, match="secure_pgp"):
        SecurePGPHook(conn_id).get_conn()


def test_material_repr_has_no_secret(pgp_keys: PGPTestKeys, pgp_conn: MakeConn) -> None:
    conn_id = pgp_conn("ours", private_key=pgp_keys.secret["alice"], password=ALICE_PASSPHRASE)
    material = SecurePGPHook(conn_id).get_conn()
    assert ALICE_PASSPHRASE not in repr(material) and "PRIVATE KEY" not in repr(material)


def test_one_line_private_key_paste(pgp_keys: PGPTestKeys, pgp_conn: MakeConn) -> None:
    one_line = pgp_keys.secret["alice"].replace("\n", "\\n")
    conn_id = pgp_conn("oneline", private_key=one_line, password=ALICE_PASSPHRASE)
    ok, message = SecurePGPHook(conn_id).test_connection()
    assert ok, message


def test_pgp_key_store_both_directions(pgp_keys: PGPTestKeys, pgp_conn: MakeConn) -> None:
    partner = pgp_conn("partner", public_keys=pgp_keys.public["bob"], public_keys_use="both")
    ours = pgp_conn("ours", private_key=pgp_keys.secret["alice"], password=ALICE_PASSPHRASE)
    sink = io.BytesIO()
    with pgp_key_store(encrypt_with=partner, sign_with=ours) as store:
        result = store.encrypt(io.BytesIO(b"payload"), sink, sign=True)
    assert result.signer == pgp_keys.fpr["alice"]
    back = pgp_keys.signed_for(b"reply")
    out = io.BytesIO()
    with pgp_key_store(decrypt_with=ours, verify_signature_with=partner) as store:
        assert store.decrypt(io.BytesIO(back), out, verify=True).signer == pgp_keys.fpr["bob"]
    assert out.getvalue() == b"reply"


def test_pgp_key_store_refuses_bad_setups(pgp_keys: PGPTestKeys, pgp_conn: MakeConn) -> None:
    only_public = pgp_conn("only_public", public_keys=pgp_keys.public["bob"])
    with pytest.raises(ConfigurationError, match="has no private_key"):
        pgp_key_store(encrypt_with=only_public, sign_with=only_public)
    expired = pgp_conn("expired_partner", public_keys=pgp_keys.public["expired"])
    with pytest.raises(SecurityPolicyError, match="expired"), pgp_key_store(encrypt_with=expired):
        pass
