"""CKKS aggregation: packing into many ciphertexts, the sum within the stated error, and who holds which key."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from fedswarm.core.errors import ConfigurationError, VerificationError
from fedswarm.privacy.he.ckks import (
    CKKSAdder,
    CKKSKeyHolder,
    CKKSParams,
    UnsafeSimulationKeysWarning,
    ckks_error_bound,
    context_digest,
    provision_contexts,
    public_context_of,
    unsafe_simulation_secret_context,
)

PARAMS = CKKSParams()  # ring 8192: 4096 slots per ciphertext
SECRET, PUBLIC = provision_contexts(PARAMS)


def test_sum_of_multi_ciphertext_vectors_is_within_the_stated_error() -> None:
    rng = np.random.default_rng(1)
    length = 2 * PARAMS.slots + 123  # three ciphertexts per member
    inputs = rng.normal(0.0, 2.0, size=(12, length))
    holder = CKKSKeyHolder(SECRET, PARAMS)
    adder = CKKSAdder(PUBLIC, PARAMS)
    encrypted = [holder.encrypt(v) for v in inputs]
    assert all(len(chunks) == 3 for chunks in encrypted)
    total = holder.decrypt(adder.add(encrypted, length=length), length=length)
    error = float(np.max(np.abs(total - inputs.sum(axis=0))))
    bound = ckks_error_bound(12, PARAMS)
    assert error <= bound
    assert error > 0.0  # CKKS is approximate: an exact match would mean nothing was encrypted
    assert bound == pytest.approx(4 * 12 * 8192 / 2**40)


def test_the_aggregator_can_add_its_own_encrypted_noise_but_not_decrypt() -> None:
    holder = CKKSKeyHolder(SECRET, PARAMS)
    adder = CKKSAdder(PUBLIC, PARAMS)
    x = np.linspace(-3, 3, 50)
    noise = np.full(50, 0.5)
    total = adder.add([holder.encrypt(x), adder.encrypt(noise)], length=50)
    assert np.max(np.abs(holder.decrypt(total, length=50) - (x + 0.5))) <= ckks_error_bound(2, PARAMS)
    with pytest.raises(VerificationError, match="must not hold the secret key"):
        CKKSAdder(SECRET, PARAMS)
    with pytest.raises(VerificationError, match="must hold the secret key"):
        CKKSKeyHolder(PUBLIC, PARAMS)
    assert public_context_of(SECRET) != SECRET and len(PUBLIC) < len(SECRET)


def test_ciphertexts_hide_the_values_and_depend_on_the_keys() -> None:
    holder = CKKSKeyHolder(SECRET, PARAMS)
    x = np.zeros(10)
    a, b = holder.encrypt(x), holder.encrypt(x)
    assert a != b  # randomized encryption
    other_secret, _ = provision_contexts(PARAMS)
    stranger = CKKSKeyHolder(other_secret, PARAMS)
    garbage = stranger.decrypt(holder.encrypt(np.ones(10)), length=10)
    assert np.max(np.abs(garbage - 1.0)) > 1.0  # the wrong key decrypts to noise


def test_malformed_inputs_are_refused() -> None:
    holder = CKKSKeyHolder(SECRET, PARAMS)
    adder = CKKSAdder(PUBLIC, PARAMS)
    one = holder.encrypt(np.ones(PARAMS.slots + 1))
    with pytest.raises(VerificationError, match="expected 1"):
        holder.decrypt(one, length=5)
    with pytest.raises(VerificationError, match="input 1 has 1 ciphertexts, expected 2"):
        adder.add([one, one[:1]], length=PARAMS.slots + 1)
    with pytest.raises(Exception, match="non-finite"):
        holder.encrypt(np.array([np.nan]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"poly_modulus_degree": 2048}, "poly_modulus_degree"),
        ({"poly_modulus_degree": 4096}, "exceed 109"),
        ({"coeff_mod_bit_sizes": (60,)}, "at least two primes"),
        ({"scale_bits": 95}, "scale_bits"),
    ],
)
def test_insecure_or_unusable_parameters(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        CKKSParams(**kwargs)  # type: ignore[arg-type]


def test_simulation_keys_are_generated_once_per_seed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = unsafe_simulation_secret_context(PARAMS, seed=1, federation="f")
        b = unsafe_simulation_secret_context(PARAMS, seed=1, federation="f")
        c = unsafe_simulation_secret_context(PARAMS, seed=2, federation="f")
    assert any(issubclass(w.category, UnsafeSimulationKeysWarning) for w in caught)
    assert context_digest(a) == context_digest(b) != context_digest(c)
    folder = next(tmp_path.glob("fedswarm-sim-keys-*"))
    assert folder.stat().st_mode & 0o777 == 0o700
    assert len(list(folder.glob("ckks-*.seal"))) == 2
