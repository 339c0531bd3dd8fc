"""CKKS key material in startup kits: generated once at provisioning, checked at every start.

A federation provisioned with ``privacy.secure_aggregation = "ckks"`` aggregates with CKKS (Cheon, Kim,
Kim and Song 2017) through TenSEAL: members encrypt their updates, the aggregator adds ciphertexts with
a *public* context, and members decrypt the sum with the *secret* context. Provisioning generates both
contexts once (:func:`generate_ckks_keys`) and writes::

    KIT/ckks-public.ctx    every kit (0644): parameters and public key, enough to encrypt and add
    KIT/ckks-secret.ctx    every member's kit (0600), sealed with the kit password when there is one;
                           never in the kit of a star topology's aggregator
    OUT/ca/ckks-*.ctx      the operator's copies, the secret sealed with the CA password, for newcomers

The CA-signed manifest lists the parameters and the SHA-256 digests of both contexts
(:class:`~fedswarm.node.manifest.CKKSKeys`), so :func:`read_ckks_files` refuses a substituted or
corrupted file by name, and refuses a secret context in an aggregator's kit.

A member admitted later gets the same contexts in its admission: the public context as is, the secret
context sealed to the X25519 key of its join request (:func:`seal_for_member`: an ephemeral X25519
agreement, HKDF-SHA256 and AES-256-GCM, the shape of HPKE's base mode, RFC 9180), so the admission file
can travel over any channel and rest in the operator's folder.

Revoking a member does not rotate the CKKS keys: a revoked member keeps the secret context and can
decrypt ciphertexts it obtains. Rotating them means provisioning the federation again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fedswarm.core.errors import VerificationError
from fedswarm.crypto.aead import aead_open, aead_seal
from fedswarm.crypto.agreement import X25519_KEY_BYTES, generate_x25519, x25519_public, x25519_shared
from fedswarm.crypto.files import read_material, read_secret, write_public, write_secret
from fedswarm.crypto.kdf import hkdf_sha256
from fedswarm.node.manifest import CKKSKeys

if TYPE_CHECKING:
    from fedswarm.privacy.he.ckks import CKKSParams

__all__ = [
    "CKKS_PUBLIC_FILE",
    "CKKS_SECRET_FILE",
    "CKKSMaterial",
    "check_ckks_material",
    "generate_ckks_keys",
    "open_as_member",
    "read_ckks_files",
    "seal_for_member",
    "write_ckks_files",
]

CKKS_PUBLIC_FILE, CKKS_SECRET_FILE = "ckks-public.ctx", "ckks-secret.ctx"
SECRET_LABEL = "fedswarm.ckks-secret-context.v1"
_ADMISSION_INFO = b"fedswarm.ckks-admission.v1\x00"


@dataclass(frozen=True, repr=False)
class CKKSMaterial:
    """Serialized TenSEAL contexts: the public one, and the secret one (``None`` for an aggregator)."""

    public: bytes
    secret: bytes | None

    def __repr__(self) -> str:
        held = "with" if self.secret is not None else "without"
        return f"CKKSMaterial(public {_sha256(self.public)[:16]}, {held} secret context)"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def generate_ckks_keys(params: CKKSParams) -> tuple[CKKSKeys, CKKSMaterial]:
    """Fresh CKKS contexts for a federation: the manifest's description and the material (with the secret).

    Raises
    ------
    ConfigurationError
        TenSEAL is not installed.
    """
    from fedswarm.privacy.he.ckks import provision_contexts

    secret, public = provision_contexts(params)
    keys = CKKSKeys(
        poly_modulus_degree=params.poly_modulus_degree,
        coeff_mod_bit_sizes=tuple(params.coeff_mod_bit_sizes),
        scale_bits=params.scale_bits,
        public_context=_sha256(public),
        secret_context=_sha256(secret),
    )
    return keys, CKKSMaterial(public, secret)


def check_ckks_material(
    material: CKKSMaterial | None, keys: CKKSKeys | None, *, holds_secret: bool, directory: Path
) -> None:
    """Check material against the manifest's CKKS keys; errors name the file in ``directory``.

    Raises
    ------
    VerificationError
        Material without keys in the manifest or keys without material, a digest that differs from the
        manifest's, a missing secret context where one belongs, or a secret context where none may be
        (``holds_secret`` false: a star topology's aggregator).
    """
    public_path, secret_path = directory / CKKS_PUBLIC_FILE, directory / CKKS_SECRET_FILE
    if keys is None:
        if material is not None:
            raise VerificationError(f"{public_path}: CKKS key material, but the CA-signed manifest lists no CKKS keys")
        return
    if material is None:
        raise VerificationError(f"{public_path}: the CA-signed manifest lists CKKS keys, but the kit has none")
    if _sha256(material.public) != keys.public_context:
        raise VerificationError(
            f"{public_path}: SHA-256 {_sha256(material.public)[:16]} is not the CA-signed manifest's "
            f"ckks.public_context {keys.public_context[:16]} (substituted or corrupted)"
        )
    if material.secret is None:
        if holds_secret:
            raise VerificationError(f"{secret_path}: a member's kit needs the federation's CKKS secret context")
        return
    if not holds_secret:
        raise _aggregator_holds_secret(secret_path)
    if _sha256(material.secret) != keys.secret_context:
        raise VerificationError(
            f"{secret_path}: SHA-256 {_sha256(material.secret)[:16]} is not the CA-signed manifest's "
            f"ckks.secret_context {keys.secret_context[:16]} (substituted or corrupted)"
        )


def _aggregator_holds_secret(path: Path) -> VerificationError:
    return VerificationError(
        f"{path}: the aggregator's kit must not hold the CKKS secret context (it could decrypt every "
        "member's update); delete the file"
    )


def write_ckks_files(directory: Path, material: CKKSMaterial, *, password: bytes | None) -> None:
    """Write the public context (``0644``) and, when present, the secret one (``0600``, sealed with ``password``)."""
    write_public(directory / CKKS_PUBLIC_FILE, material.public)
    if material.secret is not None:
        write_secret(directory / CKKS_SECRET_FILE, material.secret, password=password, label=SECRET_LABEL)


def read_ckks_files(
    directory: Path, keys: CKKSKeys | None, *, holds_secret: bool, password: bytes | None
) -> CKKSMaterial | None:
    """Read and check the CKKS files of a kit (or of the operator's folder) against the manifest's keys.

    Parameters
    ----------
    directory
        The kit.
    keys
        The CA-signed manifest's CKKS keys (``None``: the federation has none, and the kit must hold none).
    holds_secret
        Whether this kit must hold the secret context (every member but a star topology's aggregator).
    password
        Opens a sealed secret context (the kit password).

    Returns
    -------
    CKKSMaterial or None
        ``None`` when the federation has no CKKS keys.

    Raises
    ------
    VerificationError
        See :func:`check_ckks_material`.
    KeyMaterialError
        A file is missing or unreadable, or the secret context's password is wrong or missing.
    """
    public_path, secret_path = directory / CKKS_PUBLIC_FILE, directory / CKKS_SECRET_FILE
    if keys is None:
        for path in (public_path, secret_path):
            if path.exists():
                raise VerificationError(f"{path}: CKKS key material, but the CA-signed manifest lists no CKKS keys")
        return None
    public = read_material(public_path)
    secret = None
    if holds_secret:
        secret = read_secret(secret_path, password=password, label=SECRET_LABEL)
    elif secret_path.exists():
        raise _aggregator_holds_secret(secret_path)
    material = CKKSMaterial(public, secret)
    check_ckks_material(material, keys, holds_secret=holds_secret, directory=directory)
    return material


def _admission_key(shared: bytes, ephemeral: bytes, recipient: bytes) -> bytes:
    return hkdf_sha256(shared, info=_ADMISSION_INFO + ephemeral + recipient)


def seal_for_member(secret: bytes, recipient: bytes, *, context: bytes) -> bytes:
    """Encrypt ``secret`` to the X25519 public key ``recipient``: ``ephemeral public key || AES-GCM output``.

    ``context`` (federation id and member name) is authenticated: the sealed secret opens for that
    member of that federation only.
    """
    ephemeral = generate_x25519()
    key = _admission_key(x25519_shared(ephemeral.private, recipient), ephemeral.public, recipient)
    return ephemeral.public + aead_seal(key, secret, associated_data=context)


def open_as_member(sealed: bytes, private: bytes, *, context: bytes, source: str) -> bytes:
    """Inverse of :func:`seal_for_member` with the recipient's private key.

    Raises
    ------
    VerificationError
        Naming ``source``: the sealed secret is for another key or context, or was altered.
    """
    if len(sealed) <= X25519_KEY_BYTES:
        raise VerificationError(f"{source}: the sealed CKKS secret context is truncated")
    ephemeral, body = bytes(sealed[:X25519_KEY_BYTES]), bytes(sealed[X25519_KEY_BYTES:])
    recipient = x25519_public(private)
    try:
        key = _admission_key(x25519_shared(private, ephemeral), ephemeral, recipient)
        return aead_open(key, body, associated_data=context)
    except VerificationError as exc:
        raise VerificationError(
            f"{source}: the sealed CKKS secret context does not open with this member's join key ({exc})"
        ) from None
