"""Additively homomorphic aggregation with CKKS (Cheon, Kim, Kim and Song 2017, "Homomorphic Encryption
for Arithmetic of Approximate Numbers"), through TenSEAL (Benaissa et al. 2021) on Microsoft SEAL.

Roles and keys. Every member holds the federation's *secret* context (public key and secret key);
the aggregator holds only the *public* context (parameters and public key, no secret key): it can add
ciphertexts and encrypt values of its own (central DP noise), never decrypt. Members encrypt their
vectors, the aggregator adds the ciphertexts, and a member decrypts the sum.

Packing. A ciphertext holds ``poly_modulus_degree / 2`` slots; a longer vector is cut into consecutive
chunks, one ciphertext each (:meth:`CKKSKeyHolder.encrypt`), and sums are taken chunk by chunk.

Error. CKKS is approximate: encoding rounds to the scale ``2^scale_bits`` and every fresh encryption
adds a small noise. Measured with the default parameters (ring degree ``N = 8192``, scale ``2^40``),
one ciphertext decrypts within about ``N / 2^scale_bits`` (7e-9) per slot and the errors of ``k``
ciphertexts add like independent noises. :func:`ckks_error_bound` states ``4 k N / 2^scale_bits`` per
coordinate of a sum of ``k`` ciphertexts: linear in ``k`` and four times the single-ciphertext
maximum, a margin that the tests check and that holds with overwhelming probability (it is an
engineering bound on a randomized error, not a worst case).

Key distribution. A real federation generates the secret context once during provisioning
(:func:`provision_contexts`) and hands it to members only, and the public context to the aggregator.
Simulation takes a shortcut: :func:`unsafe_simulation_secret_context` generates the secret context once
per run seed and parameters and caches it in a file readable only by the current user, so that every
worker process of a simulation finds the same keys. Do not use that for anything but simulation. Real
nodes take their keys from their startup kit as :class:`CKKSKeyMaterial`; a node without the secret
context (a star aggregator) still encrypts its own update with the public one (:class:`CKKSPublicHolder`),
and never decrypts.

Security. The default parameters (``N = 8192``, 160 bits of modulus) are within the 128-bit security
bound of the homomorphic encryption standard (218 bits for ``N = 8192``). Because every member holds
the secret key, a member that obtains another member's ciphertext can decrypt it: CKKS here protects
updates from the aggregator (and from anyone on the path), not from members colluding with it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedswarm.codec import canonical
from fedswarm.core.errors import ConfigurationError, ParameterError, VerificationError

__all__ = [
    "MAX_COEFF_MODULUS_BITS",
    "CKKSAdder",
    "CKKSKeyHolder",
    "CKKSKeyMaterial",
    "CKKSParams",
    "CKKSPublicHolder",
    "UnsafeSimulationKeysWarning",
    "ckks_error_bound",
    "context_digest",
    "provision_contexts",
    "public_context_of",
    "require_tenseal",
    "unsafe_simulation_secret_context",
]

MAX_COEFF_MODULUS_BITS = {4096: 109, 8192: 218, 16384: 438, 32768: 881}
"""Largest total coefficient modulus for 128-bit classical security (HomomorphicEncryption.org standard)."""


class UnsafeSimulationKeysWarning(UserWarning):
    """A CKKS secret context was generated for simulation and cached on disk."""


def require_tenseal() -> Any:
    """Import TenSEAL or raise :class:`ConfigurationError` saying how to install it."""
    try:
        import tenseal  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - depends on the environment
        raise ConfigurationError(
            "privacy.secure_aggregation = 'ckks' needs TenSEAL: pip install 'fedswarm[he]' (or tenseal)"
        ) from None
    return tenseal


@dataclass(frozen=True, slots=True)
class CKKSParams:
    """CKKS encryption parameters: ring degree, coefficient moduli (bits) and the scale ``2^scale_bits``."""

    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 40, 60)
    scale_bits: int = 40

    def __post_init__(self) -> None:
        n = self.poly_modulus_degree
        if n not in MAX_COEFF_MODULUS_BITS:
            raise ConfigurationError(
                f"privacy.ckks.poly_modulus_degree: {n} is not one of {sorted(MAX_COEFF_MODULUS_BITS)}"
            )
        mods = self.coeff_mod_bit_sizes
        if len(mods) < 2 or any(not 20 <= b <= 60 for b in mods):
            raise ConfigurationError(
                f"privacy.ckks.coeff_mod_bit_sizes: {list(mods)} needs at least two primes of 20..60 bits"
            )
        if sum(mods) > MAX_COEFF_MODULUS_BITS[n]:
            raise ConfigurationError(
                f"privacy.ckks.coeff_mod_bit_sizes: {sum(mods)} bits in total exceed {MAX_COEFF_MODULUS_BITS[n]}, "
                f"the 128-bit security limit for poly_modulus_degree {n}"
            )
        data_bits = sum(mods[:-1])
        if not 10 <= self.scale_bits <= data_bits - 10:
            raise ConfigurationError(
                f"privacy.ckks.scale_bits: {self.scale_bits} leaves no room for values in a {data_bits}-bit "
                f"ciphertext modulus; choose 10..{data_bits - 10}"
            )

    @property
    def slots(self) -> int:
        """Values per ciphertext."""
        return self.poly_modulus_degree // 2

    def chunks(self, length: int) -> int:
        """Ciphertexts needed for a vector of ``length`` values."""
        return -(-length // self.slots)

    def as_dict(self) -> dict[str, Any]:
        return {
            "poly_modulus_degree": self.poly_modulus_degree,
            "coeff_mod_bit_sizes": list(self.coeff_mod_bit_sizes),
            "scale_bits": self.scale_bits,
        }


def ckks_error_bound(num_inputs: int, params: CKKSParams) -> float:
    """Stated per-coordinate bound ``4 k N / 2^scale_bits`` on the error of a decrypted sum of ``k`` ciphertexts."""
    return 4.0 * max(1, num_inputs) * params.poly_modulus_degree / float(2**params.scale_bits)


def _new_context(params: CKKSParams) -> Any:
    ts = require_tenseal()
    ctx = ts.context(
        ts.SCHEME_TYPE.CKKS,
        poly_modulus_degree=params.poly_modulus_degree,
        coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
    )
    ctx.global_scale = float(2**params.scale_bits)
    return ctx


def provision_contexts(params: CKKSParams) -> tuple[bytes, bytes]:
    """Generate fresh keys: ``(secret context for members, public context for the aggregator)``."""
    ctx = _new_context(params)
    secret = bytes(ctx.serialize(save_secret_key=True, save_relin_keys=False, save_galois_keys=False))
    ctx.make_context_public()
    return secret, bytes(ctx.serialize(save_relin_keys=False, save_galois_keys=False))


def _cache_path(params: CKKSParams, *, seed: int, federation: str) -> Path:
    key = canonical.digest({"federation": federation, "seed": seed, "ckks": params.as_dict(), "v": 1}).hex()[:32]
    folder = Path(tempfile.gettempdir()) / f"fedswarm-sim-keys-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    if folder.stat().st_uid != os.getuid() or folder.stat().st_mode & 0o077:
        raise ConfigurationError(f"{folder}: simulation key folder is not private to this user")
    return folder / f"ckks-{key}.seal"


def unsafe_simulation_secret_context(params: CKKSParams, *, seed: int, federation: str) -> bytes:
    """The secret context of a *simulated* federation: generated once per (federation, seed, params).

    The first caller generates it and publishes it atomically (a hard link that fails if another
    process won the race, in which case the winner's keys are used); later callers, including worker
    processes, read it. The file is in a per-user folder of mode 0700. Warns with
    :class:`UnsafeSimulationKeysWarning`: secret keys on disk stand in for provisioning.
    """
    warnings.warn(
        "CKKS keys for simulation are generated once per run seed and cached on disk; real federations "
        "distribute the secret context with provisioning",
        UnsafeSimulationKeysWarning,
        stacklevel=2,
    )
    path = _cache_path(params, seed=seed, federation=federation)
    if not path.exists():
        secret, _ = provision_contexts(params)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(secret)
            with contextlib.suppress(FileExistsError):  # another process published its keys first
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    return path.read_bytes()


def public_context_of(secret: bytes) -> bytes:
    """The public context (no secret key, no relinearization or Galois keys: addition needs none) of a
    secret context."""
    ts = require_tenseal()
    ctx = ts.context_from(secret)
    ctx.make_context_public()
    return bytes(ctx.serialize(save_relin_keys=False, save_galois_keys=False))


class CKKSKeyHolder:
    """A member's side: encrypt a vector into chunked ciphertexts, decrypt a summed one."""

    def __init__(self, secret_context: bytes, params: CKKSParams) -> None:
        ts = require_tenseal()
        self._ts = ts
        self._ctx = ts.context_from(secret_context)
        if not self._ctx.is_private():
            raise VerificationError("CKKS: a member's context must hold the secret key")
        self.params = params

    def encrypt(self, vector: npt.ArrayLike) -> tuple[bytes, ...]:
        """Encrypt ``vector`` (finite floats) chunk by chunk; one serialized ciphertext per chunk."""
        values = np.asarray(vector, dtype=np.float64).reshape(-1)
        if not np.isfinite(values).all():
            raise ParameterError("CKKS: cannot encrypt non-finite values")
        slots = self.params.slots
        return tuple(
            bytes(self._ts.ckks_vector(self._ctx, values[i : i + slots].tolist()).serialize())
            for i in range(0, len(values), slots)
        )

    def decrypt(self, chunks: tuple[bytes, ...], *, length: int) -> npt.NDArray[np.float64]:
        """Decrypt chunked ciphertexts of a vector of ``length`` values."""
        if len(chunks) != self.params.chunks(length):
            raise VerificationError(
                f"CKKS: {len(chunks)} ciphertexts for {length} values, expected {self.params.chunks(length)}"
            )
        out = np.empty(length, dtype=np.float64)
        slots = self.params.slots
        for i, blob in enumerate(chunks):
            part = self._ts.ckks_vector_from(self._ctx, blob).decrypt()
            lo, hi = i * slots, min(length, (i + 1) * slots)
            if len(part) < hi - lo:
                raise VerificationError(f"CKKS: ciphertext {i} holds {len(part)} values, expected {hi - lo}")
            out[lo:hi] = part[: hi - lo]
        return out


class CKKSPublicHolder(CKKSKeyHolder):
    """A member without the secret key (a star aggregator that also trains): it encrypts with the public
    context, and refuses to decrypt."""

    def __init__(self, public_context: bytes, params: CKKSParams) -> None:
        ts = require_tenseal()
        self._ts = ts
        self._ctx = ts.context_from(public_context)
        if self._ctx.is_private():
            raise VerificationError("CKKS: CKKSPublicHolder takes the public context, not the secret one")
        self.params = params

    def decrypt(self, chunks: tuple[bytes, ...], *, length: int) -> npt.NDArray[np.float64]:
        raise VerificationError("CKKS: this member holds no secret key and cannot decrypt")


@dataclass(frozen=True, slots=True)
class CKKSKeyMaterial:
    """A node's CKKS keys from provisioning: the public context, and the secret one if the node holds it."""

    public: bytes
    secret: bytes | None

    def __post_init__(self) -> None:
        if not self.public:
            raise ConfigurationError("CKKS key material: the public context is empty")


class CKKSAdder:
    """The aggregator's side: add chunked ciphertexts and encrypt its own values, without a secret key."""

    def __init__(self, public_context: bytes, params: CKKSParams) -> None:
        ts = require_tenseal()
        self._ts = ts
        self._ctx = ts.context_from(public_context)
        if self._ctx.is_private():
            raise VerificationError("CKKS: the aggregator's context must not hold the secret key")
        self.params = params

    def add(self, inputs: list[tuple[bytes, ...]], *, length: int) -> tuple[bytes, ...]:
        """Sum chunked ciphertexts coordinate-wise; every input must have the chunks of ``length`` values."""
        n_chunks = self.params.chunks(length)
        if not inputs:
            raise ParameterError("CKKS: nothing to add")
        totals: list[Any] = []
        for k, chunks in enumerate(inputs):
            if len(chunks) != n_chunks:
                raise VerificationError(f"CKKS: input {k} has {len(chunks)} ciphertexts, expected {n_chunks}")
            for i, blob in enumerate(chunks):
                vec = self._ts.ckks_vector_from(self._ctx, blob)
                if k == 0:
                    totals.append(vec)
                else:
                    totals[i] += vec
        return tuple(bytes(v.serialize()) for v in totals)

    def encrypt(self, vector: npt.ArrayLike) -> tuple[bytes, ...]:
        """Encrypt values with the public key (the aggregator's own noise, for example)."""
        values = np.asarray(vector, dtype=np.float64).reshape(-1)
        slots = self.params.slots
        return tuple(
            bytes(self._ts.ckks_vector(self._ctx, values[i : i + slots].tolist()).serialize())
            for i in range(0, len(values), slots)
        )


def context_digest(context: bytes) -> str:
    """SHA-256 of a serialized context (to check that two parties hold the same keys)."""
    return hashlib.sha256(context).hexdigest()
