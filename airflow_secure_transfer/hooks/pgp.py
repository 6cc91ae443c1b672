"""``SecurePGPHook``: a ``secure_pgp`` ("PGP keys") connection -> checked OpenPGP keys -> a private key store.

A PGP keys connection holds no server: extra ``public_keys`` (the partner's armoured public key(s):
recipients to encrypt to, or signers to accept), extra ``private_key`` (our armoured secret key,
masked) and the password (that key's passphrase). The operators name such connections in
``encrypt_with`` / ``sign_with`` (upload) and ``decrypt_with`` / ``verify_signature_with`` (download);
:func:`pgp_key_store` turns those names into one :class:`~airflow_secure_transfer.security.pgp.PGPKeyStore`
for the task. The secrets are registered with Airflow's log masker as soon as the connection is read.

``gpg`` runs only when a store is opened or the Test button is pressed: importing this module and
constructing the hook do no I/O.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import TYPE_CHECKING, Any, Literal, cast

from airflow.sdk import BaseHook

from airflow_secure_transfer.exceptions import ConfigurationError, SecureTransferError, scrub_text
from airflow_secure_transfer.hooks.resolve import _mask

if TYPE_CHECKING:
    from airflow_secure_transfer.security.pgp import PGPKeyInfo, PGPKeyStore

__all__ = ["PGP_CONN_TYPES", "PGPKeyMaterial", "SecurePGPHook", "pgp_key_store", "pgp_keys_from_connection"]

PGP_CONN_TYPES = ("secure_pgp",)
_EXTRAS = frozenset({"public_keys", "private_key", "public_keys_use"})
_USES = ("encrypt", "verify", "both")


@dataclasses.dataclass(frozen=True)
class PGPKeyMaterial:
    """The key text of one PGP keys connection (secrets kept out of ``repr``).

    :param conn_id: the connection it was read from.
    :param public_keys: armoured public key(s), or ``None``.
    :param private_key: our armoured secret key, or ``None``.
    :param passphrase: the secret key's passphrase (the connection's password), or ``None``.
    :param public_keys_use: ``"encrypt"``, ``"verify"`` or ``"both"``: what the Test button checks.
    """

    conn_id: str
    public_keys: str | None
    private_key: str | None = dataclasses.field(default=None, repr=False)
    passphrase: str | None = dataclasses.field(default=None, repr=False)
    public_keys_use: Literal["encrypt", "verify", "both"] = "encrypt"


def _text(conn_id: str, name: str, value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigurationError(f"connection {conn_id!r}: extra {name!r} must be text (ASCII armour)")
    return value


def pgp_keys_from_connection(conn: Any) -> PGPKeyMaterial:
    """Validate a ``secure_pgp`` Airflow connection into :class:`PGPKeyMaterial`, masking its secrets first.

    :param conn: the connection as ``BaseHook.get_connection`` returns it.
    :raises ConfigurationError: wrong type, unknown extra, malformed value.
    """
    conn_id = getattr(conn, "conn_id", None) or "?"
    _mask(conn.password)
    extras = conn.extra_dejson
    if not isinstance(extras, dict):
        raise ConfigurationError(f"connection {conn_id!r}: extra must be a JSON object")
    _mask(extras.get("private_key"))
    private = extras.get("private_key")
    if isinstance(private, str) and "\\n" in private:
        _mask(private.replace("\\n", "\n"))  # the form's one-line paste, normalised later
    conn_type = (conn.conn_type or "").strip().lower()
    if conn_type not in PGP_CONN_TYPES:
        raise ConfigurationError(
            f"connection {conn_id!r} has type {conn.conn_type!r}; PGP keys need a connection of type "
            f'{", ".join(PGP_CONN_TYPES)} ("PGP keys" in the UI)'
        )
    unknown = sorted(set(extras) - _EXTRAS)
    if unknown:
        raise ConfigurationError(
            f"connection {conn_id!r}: unknown extra(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_EXTRAS))}"
        )
    use = extras.get("public_keys_use") or "encrypt"
    if use not in _USES:
        raise ConfigurationError(f"connection {conn_id!r}: public_keys_use must be one of {', '.join(_USES)}")
    material = PGPKeyMaterial(
        conn_id=conn_id,
        public_keys=_text(conn_id, "public_keys", extras.get("public_keys")),
        private_key=_text(conn_id, "private_key", private),
        passphrase=conn.password or None,
        public_keys_use=cast("Literal['encrypt', 'verify', 'both']", use),
    )
    if material.public_keys is None and material.private_key is None:
        raise ConfigurationError(f"connection {conn_id!r} holds no key: set public_keys and/or private_key")
    return material


def _read(conn_id: str) -> PGPKeyMaterial:
    return pgp_keys_from_connection(BaseHook.get_connection(conn_id))


def pgp_key_store(
    *,
    encrypt_with: str | None = None,
    sign_with: str | None = None,
    decrypt_with: str | None = None,
    verify_signature_with: str | None = None,
    tmp_dir: str | None = None,
) -> PGPKeyStore:
    """Read the named PGP keys connections and return the task's key store (enter it with ``with``).

    Upload: ``pgp_key_store(encrypt_with=..., sign_with=...)`` then ``store.encrypt(src, sink, sign=...)``.
    Download: ``pgp_key_store(decrypt_with=..., verify_signature_with=...)`` then
    ``store.decrypt(src, temp_sink, verify=verify_signature_with is not None)`` and rename on success.

    :param encrypt_with: connection whose ``public_keys`` are the recipients.
    :param sign_with: connection whose ``private_key`` (+ password) signs.
    :param decrypt_with: connection whose ``private_key`` (+ password) decrypts.
    :param verify_signature_with: connection whose ``public_keys`` are the accepted signers.
    :raises ConfigurationError: a connection without the key it is named for, or both a signing and
        a decrypting secret key (one task does one direction).
    """
    from airflow_secure_transfer.security.pgp import PGPKeyStore

    if sign_with and decrypt_with:
        raise ConfigurationError("sign_with and decrypt_with are for different directions; give one")
    recipients = verifiers = secret = passphrase = None
    purpose: Literal["sign", "decrypt"] | None = None
    if encrypt_with:
        material = _read(encrypt_with)
        if material.public_keys is None:
            raise ConfigurationError(f"encrypt_with={encrypt_with!r}: the connection has no public_keys")
        recipients = material.public_keys
    if verify_signature_with:
        material = _read(verify_signature_with)
        if material.public_keys is None:
            raise ConfigurationError(
                f"verify_signature_with={verify_signature_with!r}: the connection has no public_keys"
            )
        verifiers = material.public_keys
    for role, conn_id in (("sign", sign_with), ("decrypt", decrypt_with)):
        if conn_id:
            material = _read(conn_id)
            if material.private_key is None:
                raise ConfigurationError(f"{role}_with={conn_id!r}: the connection has no private_key")
            secret, passphrase = material.private_key, material.passphrase
            purpose = "sign" if role == "sign" else "decrypt"
    return PGPKeyStore(
        recipients=recipients,
        secret_key=secret,
        passphrase=passphrase,
        verifiers=verifiers,
        purpose=purpose,
        tmp_dir=tmp_dir,
    )


class SecurePGPHook(BaseHook):
    """Read and check the OpenPGP keys of a ``secure_pgp`` ("PGP keys") connection.

    :param pgp_conn_id: the connection; read when first needed.
    """

    conn_name_attr = "pgp_conn_id"
    default_conn_name = "secure_pgp_default"
    conn_type = "secure_pgp"
    hook_name = "PGP keys"

    # Airflow 3.1's connection form (3.2+ reads the same declaration from the provider info).
    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Return the form fields of the Airflow 3.1 UI, built from ``PGP_CONN_FIELDS``."""
        from airflow_secure_transfer import PGP_CONN_FIELDS
        from airflow_secure_transfer.compat import connection_form_widgets

        return connection_form_widgets(PGP_CONN_FIELDS)

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Return the standard fields' behaviour for the Airflow 3.1 UI, from ``PGP_UI_FIELD_BEHAVIOUR``."""
        from airflow_secure_transfer import PGP_UI_FIELD_BEHAVIOUR
        from airflow_secure_transfer.compat import ui_field_behaviour

        return ui_field_behaviour(PGP_UI_FIELD_BEHAVIOUR)

    def __init__(self, pgp_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pgp_conn_id = pgp_conn_id
        self._material: PGPKeyMaterial | None = None

    def get_conn(self) -> PGPKeyMaterial:
        """Return the connection's key material (read and validated once; secrets masked in logs)."""
        if self._material is None:
            self._material = pgp_keys_from_connection(self.get_connection(self.pgp_conn_id))
        return self._material

    def key_store(self, *, purpose: Literal["sign", "decrypt"] | None = None) -> PGPKeyStore:
        """A key store with this connection's keys (public keys as recipients and as accepted signers)."""
        from airflow_secure_transfer.security.pgp import PGPKeyStore

        m = self.get_conn()
        return PGPKeyStore(
            recipients=m.public_keys if m.public_keys_use in ("encrypt", "both") else None,
            verifiers=m.public_keys if m.public_keys_use in ("verify", "both") else None,
            secret_key=m.private_key,
            passphrase=m.passphrase,
            purpose=purpose,
        )

    def describe_keys(self) -> tuple[list[str], list[str]]:
        """Return (one line per key, the problems found): what :meth:`test_connection` shows."""
        from airflow_secure_transfer.security.pgp import PGPKeyStore

        m = self.get_conn()
        lines: list[str] = []
        problems: list[str] = []
        now = datetime.datetime.now(tz=datetime.UTC)
        if m.public_keys:
            with PGPKeyStore(recipients=m.public_keys, check=False) as store:
                keys: tuple[PGPKeyInfo, ...] = store.recipient_keys
            purposes: list[Literal["encrypt", "verify"]] = (
                ["encrypt", "verify"] if m.public_keys_use == "both" else [m.public_keys_use]
            )
            for key in keys:
                lines.append(key.describe())
                for purpose in purposes:
                    problems += [f"{key.fingerprint}: {p} (to {purpose})" for p in key.problems(now, purpose=purpose)]
        if m.private_key:
            with PGPKeyStore(secret_key=m.private_key, check=False) as store:
                secret = store.secret_keys
            lines += [k.describe() for k in secret]
            if not any(p.startswith(tuple(k.fingerprint for k in secret)) for p in problems):
                try:
                    # The full check: validity, strength, a signing or decryption subkey, the passphrase.
                    with PGPKeyStore(secret_key=m.private_key, passphrase=m.passphrase):
                        pass
                except SecureTransferError as exc:
                    problems.append(str(exc))
        return lines, problems

    def test_connection(self) -> tuple[bool, str]:
        """List each key's fingerprint, user ids, algorithms and expiry; fail on an unusable key.

        Fails on an expired, revoked or weak key (RSA < 2048, DSA, ElGamal-only), a secret key the
        passphrase does not open, and a public key without an encryption-capable subkey when the
        public keys are for encryption (``public_keys_use``). Never a traceback, never a secret.
        """
        try:
            lines, problems = self.describe_keys()
        except SecureTransferError as exc:
            return False, self._clean(f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # the UI shows the message, not a traceback
            return False, self._clean(f"cannot read connection {self.pgp_conn_id!r}: {type(exc).__name__}: {exc}")
        listing = " | ".join(lines)
        if problems:
            return False, self._clean(f"Refused: {'; '.join(problems)}. Keys: {listing}")
        return True, self._clean(f"{len(lines)} key(s) OK: {listing}")

    def _clean(self, text: str) -> str:
        m = self._material
        return text if m is None else scrub_text(text, [m.passphrase, m.private_key])
