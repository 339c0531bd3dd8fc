"""The member side of SecAgg+ (Bonawitz et al., 2017, "Practical Secure Aggregation for
Privacy-Preserving Machine Learning"; neighbour graph of Bell et al., 2020).

A member ``u`` with neighbours ``N(u)`` (see :mod:`fedswarm.privacy.secagg.graph`) runs:

0. **advertise keys** -- fresh X25519 key pairs ``(c_u, C_u)`` for encryption and ``(s_u, S_u)`` for
   masking; sends ``C_u, S_u``.
1. **share keys** -- draws a 32-byte self-mask seed ``b_u``, Shamir-shares ``b_u`` and ``s_u``
   ``threshold``-of-``|N(u)|`` among the live neighbours, and encrypts each neighbour's two shares with
   AES-256-GCM under ``HKDF(X25519(c_u, C_v))``, bound to the session, sender and recipient.
2. **masked input** -- with ``U2`` the neighbours whose ciphertexts arrived, sends
   ``y_u = q_u + PRG(b_u) + sum_{v in U2, u before v} PRG(s_uv) - sum_{v in U2, v before u} PRG(s_uv)``
   modulo ``2^R``, where ``q_u`` is the quantized input, ``s_uv = HKDF(X25519(s_u, S_v))`` and "before"
   is roster order. Pairwise masks cancel in the sum; ``PRG(b_u)`` hides ``y_u`` even from someone who
   learns ``s_u``. The private keys and ``b_u`` are erased afterwards.
3. **unmask** -- for each neighbour the aggregator lists as a survivor, reveals the share of its
   ``b``; for each one listed as dropped, the share of its ``s``. A member refuses a request that lists
   one member as both (which would let the aggregator unmask that member's input), refuses to answer
   twice, and refuses if fewer than ``min_inputs`` inputs are in the sum.

Distributed differential privacy composes without anything special: pass :meth:`SecAggMember.masked_input`
a vector that already contains the member's share of the noise. Choose ``clip`` so that clipping does not
cut the noise (or clip before adding noise and quantize with a wider ``clip``), and account for the
rounding: the quantization error is at most ``1/scale`` per coordinate and member (stochastic rounding,
unbiased) or ``0.5/scale`` (deterministic).

The aggregator is trusted to follow the protocol for *liveness* only (semi-honest, Bonawitz et al.
section 6.2); the consistency round with signatures of the malicious-server variant is not part of this
module.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from fedswarm.core.errors import FedswarmError, ParameterError, RoundAborted, VerificationError
from fedswarm.crypto.aead import aead_open, aead_seal
from fedswarm.crypto.agreement import X25519KeyPair, generate_x25519, x25519_shared_many
from fedswarm.crypto.kdf import hkdf_sha256
from fedswarm.crypto.prg import PRG_SEED_BYTES, prg_uint64
from fedswarm.privacy.secagg.messages import (
    AdvertiseKeys,
    EncryptedShares,
    MaskedInput,
    NeighbourKeys,
    Phase,
    ShareDelivery,
    ShareKeys,
    UnmaskRequest,
    UnmaskShares,
)
from fedswarm.privacy.secagg.params import SecAggParams
from fedswarm.privacy.secagg.quantize import quantize
from fedswarm.privacy.secagg.shamir import ELEMENT_BYTES, ByteShare, share_from_bytes, share_to_bytes, split_bytes

__all__ = [
    "SecAggMember",
    "check_unmask_request",
    "mask_vector",
    "pairwise_seed",
    "ring_mask",
    "share_encryption_context",
    "to_ring",
]

_SHARE_ELEMENTS = 3  # a 32-byte secret is three 15-byte chunks over GF(2^127 - 1)


def _frame(*parts: bytes) -> bytes:
    return b"".join(len(part).to_bytes(4, "big") + part for part in parts)


def ring_mask(ring_bits: int) -> np.uint64:
    """``2^ring_bits - 1`` as a ``uint64``."""
    return np.uint64((1 << ring_bits) - 1)


def pairwise_seed(shared_secret: bytes, *, session: bytes, pair: tuple[str, str]) -> bytes:
    """PRG seed of the pairwise mask of two members, from their masking-key agreement (symmetric)."""
    first, second = sorted(pair)
    info = _frame(b"fedswarm/secagg/v1/pair-mask", session, first.encode(), second.encode())
    return hkdf_sha256(shared_secret, info=info, length=PRG_SEED_BYTES)


def share_encryption_context(*, session: bytes, sender: str, recipient: str) -> bytes:
    """Associated data that binds an encrypted share to its session, sender and recipient."""
    return _frame(b"fedswarm/secagg/v1/share", session, sender.encode(), recipient.encode())


def _share_key(shared_secret: bytes, *, session: bytes) -> bytes:
    return hkdf_sha256(shared_secret, info=_frame(b"fedswarm/secagg/v1/share-key", session))


def to_ring(quantized: npt.NDArray[np.int64], *, ring_bits: int) -> npt.NDArray[np.uint64]:
    """Signed integers to Z_{2^ring_bits} (two's complement)."""
    return np.asarray(quantized, dtype=np.int64).view(np.uint64) & ring_mask(ring_bits)


def mask_vector(
    ring_input: npt.NDArray[np.uint64],
    *,
    self_seed: bytes,
    pair_seeds: Sequence[tuple[bytes, int]],
    ring_bits: int,
) -> npt.NDArray[np.uint64]:
    """``ring_input + PRG(self_seed) + sum(sign * PRG(seed))`` modulo ``2^ring_bits``.

    Parameters
    ----------
    ring_input
        Elements of Z_{2^ring_bits}.
    self_seed
        32-byte self-mask seed ``b``.
    pair_seeds
        ``(seed, sign)`` per neighbour, ``sign`` +1 or -1.
    ring_bits
        Ring size.
    """
    length = ring_input.shape[0]
    out = np.asarray(ring_input, dtype=np.uint64) + prg_uint64(self_seed, length)
    for seed, sign in pair_seeds:
        if sign == 1:
            out += prg_uint64(seed, length)
        elif sign == -1:
            out -= prg_uint64(seed, length)
        else:
            raise ParameterError(f"mask_vector: pair sign {sign} is not +1 or -1")
    out &= ring_mask(ring_bits)
    return out


def check_unmask_request(request: UnmaskRequest, *, member: str, holding: Sequence[str], min_inputs: int) -> None:
    """The member-side safety checks of phase 3; raises, returns ``None`` when the request is safe.

    Raises
    ------
    VerificationError
        If one member is listed both as survivor and as dropped (revealing both of its shares would
        unmask its input), if a listed member is not one whose shares ``member`` holds, or if a member
        is listed twice.
    RoundAborted
        If fewer than ``min_inputs`` masked inputs are in the sum.
    """
    both = sorted(set(request.survivors) & set(request.dropped))
    if both:
        raise VerificationError(
            f"member {member}: refusing to reveal both the self-mask share and the masking-key share of "
            f"member {both[0]} (listed as survivor and as dropped)"
        )
    listed = request.survivors + request.dropped
    if len(set(listed)) != len(listed):
        raise VerificationError(f"member {member}: unmask request lists a member twice")
    strangers = sorted(set(listed) - set(holding))
    if strangers:
        raise VerificationError(f"member {member}: unmask request names {strangers[0]}, whose shares it does not hold")
    if request.num_inputs < min_inputs:
        raise RoundAborted(
            f"{Phase.UNMASK.label}: member {member} refuses to unmask a sum of {request.num_inputs} inputs, "
            f"fewer than min_inputs = {min_inputs}"
        )


class SecAggMember:
    """One member's state through a SecAgg+ round; each method is one phase and is called once, in order.

    Parameters
    ----------
    member
        This member's id (in ``params.roster``).
    params
        The round's parameters, identical at every party.
    """

    def __init__(self, member: str, params: SecAggParams) -> None:
        params.rank(member)
        self.member = member
        self.params = params
        self._phase = Phase.ADVERTISE_KEYS
        self._encryption_keys: X25519KeyPair | None = None
        self._masking_keys: X25519KeyPair | None = None
        self._neighbour_keys: dict[str, AdvertiseKeys] = {}
        self._self_seed: bytes | None = None
        self._aead_keys: dict[str, bytes] = {}
        self._held: dict[str, tuple[ByteShare, ByteShare]] = {}

    @property
    def phase(self) -> Phase:
        """The next phase this member expects."""
        return self._phase

    def _enter(self, phase: Phase) -> None:
        if self._phase != phase:
            expected = self._phase.label
            self._abort()
            raise VerificationError(f"member {self.member}: asked for {phase.label} while expecting {expected}")

    def _abort(self) -> None:
        """Leave the round for good: erase every secret and refuse any further phase."""
        self._phase = Phase.DONE
        self._encryption_keys = self._masking_keys = None
        self._self_seed = None
        self._aead_keys = {}
        self._held = {}

    def advertise_keys(self) -> AdvertiseKeys:
        """Phase 0: generate the two key pairs and return their public halves."""
        self._enter(Phase.ADVERTISE_KEYS)
        self._encryption_keys = generate_x25519()
        self._masking_keys = generate_x25519()
        self._phase = Phase.SHARE_KEYS
        return AdvertiseKeys(self.member, self._encryption_keys.public, self._masking_keys.public)

    def share_keys(self, keys: NeighbourKeys) -> ShareKeys:
        """Phase 1: secret-share ``b`` and the masking key among the live neighbours listed in ``keys``.

        Raises
        ------
        VerificationError
            If ``keys`` is for another member, names non-neighbours or repeats a key.
        RoundAborted
            If fewer than ``threshold`` neighbours are live.
        """
        self._enter(Phase.SHARE_KEYS)
        try:
            return self._share_keys(keys)
        except FedswarmError:
            self._abort()
            raise

    def _share_keys(self, keys: NeighbourKeys) -> ShareKeys:
        assert self._encryption_keys is not None and self._masking_keys is not None
        params = self.params
        if keys.recipient != self.member:
            raise VerificationError(f"member {self.member}: received the neighbour keys of {keys.recipient}")
        neighbours = set(params.neighbours(self.member))
        seen = {self._encryption_keys.public, self._masking_keys.public}
        for name, advertised in keys.keys.items():
            if name not in neighbours or advertised.member != name:
                raise VerificationError(f"member {self.member}: {name} is not one of its neighbours")
            for key in (advertised.encryption_key, advertised.masking_key):
                if len(key) != 32 or key in seen:
                    raise VerificationError(f"member {self.member}: public key of {name} is malformed or repeated")
                seen.add(key)
        if len(keys.keys) < params.threshold:
            raise RoundAborted(
                f"{Phase.SHARE_KEYS.label}: member {self.member} has {len(keys.keys)} live neighbours, "
                f"fewer than the threshold {params.threshold}"
            )
        holders = sorted(keys.keys, key=params.rank)
        self._neighbour_keys = {name: keys.keys[name] for name in holders}
        self_seed = os.urandom(PRG_SEED_BYTES)
        xs = [params.x_coordinate(name) for name in holders]
        seed_shares = split_bytes(self_seed, xs, threshold=params.threshold)
        key_shares = split_bytes(self._masking_keys.private, xs, threshold=params.threshold)
        self._self_seed = self_seed
        agreements = x25519_shared_many(
            self._encryption_keys.private, [keys.keys[name].encryption_key for name in holders]
        )
        self._aead_keys = {
            name: _share_key(shared, session=params.session) for name, shared in zip(holders, agreements, strict=True)
        }
        out = []
        for name, seed_share, key_share in zip(holders, seed_shares, key_shares, strict=True):
            ciphertext = aead_seal(
                self._aead_keys[name],
                share_to_bytes(seed_share) + share_to_bytes(key_share),
                associated_data=share_encryption_context(session=params.session, sender=self.member, recipient=name),
            )
            out.append(EncryptedShares(self.member, name, ciphertext))
        self._phase = Phase.MASKED_INPUT
        return ShareKeys(self.member, tuple(out))

    def masked_input(
        self, vector: npt.ArrayLike, delivery: ShareDelivery, *, rng: np.random.Generator | None = None
    ) -> MaskedInput:
        """Phase 2: decrypt the delivered shares, then quantize and mask ``vector``.

        Parameters
        ----------
        vector
            The member's flat float vector of length ``params.dimension``; for distributed DP, with the
            member's noise already added.
        delivery
            Ciphertexts from the neighbours that completed phase 1.
        rng
            Generator for stochastic rounding (not for masks); ``None`` seeds one from the OS.

        Raises
        ------
        VerificationError
            If a ciphertext fails to decrypt or comes from a stranger.
        RoundAborted
            If fewer than ``threshold`` neighbours completed phase 1.
        """
        self._enter(Phase.MASKED_INPUT)
        try:
            return self._masked_input(vector, delivery, rng)
        except FedswarmError:
            self._abort()
            raise

    def _masked_input(
        self, vector: npt.ArrayLike, delivery: ShareDelivery, rng: np.random.Generator | None
    ) -> MaskedInput:
        assert self._encryption_keys is not None and self._masking_keys is not None
        assert self._self_seed is not None
        params = self.params
        values = np.asarray(vector, dtype=np.float64)
        if values.shape != (params.dimension,):
            raise ParameterError(
                f"member {self.member}: input has shape {values.shape}, expected ({params.dimension},)"
            )
        if delivery.recipient != self.member:
            raise VerificationError(f"member {self.member}: received the share delivery of {delivery.recipient}")
        held: dict[str, tuple[ByteShare, ByteShare]] = {}
        for item in delivery.shares:
            sender = item.sender
            if item.recipient != self.member or sender not in self._neighbour_keys or sender in held:
                raise VerificationError(f"member {self.member}: unexpected encrypted shares from {sender}")
            try:
                plaintext = aead_open(
                    self._aead_keys[sender],
                    item.ciphertext,
                    associated_data=share_encryption_context(
                        session=params.session, sender=sender, recipient=self.member
                    ),
                )
            except VerificationError as exc:
                raise VerificationError(f"member {self.member}: shares from {sender} do not decrypt") from exc
            half = _SHARE_ELEMENTS * ELEMENT_BYTES
            if len(plaintext) != 2 * half:
                raise VerificationError(f"member {self.member}: shares from {sender} have the wrong length")
            held[sender] = (share_from_bytes(plaintext[:half]), share_from_bytes(plaintext[half:]))
        if len(held) < params.threshold:
            raise RoundAborted(
                f"{Phase.MASKED_INPUT.label}: member {self.member} received shares from {len(held)} "
                f"neighbours, fewer than the threshold {params.threshold}"
            )
        quantized = quantize(values, clip=params.clip, bits=params.bits, rounding=params.rounding, rng=rng)
        own_rank = params.rank(self.member)
        agreements = x25519_shared_many(
            self._masking_keys.private, [self._neighbour_keys[name].masking_key for name in held]
        )
        pair_seeds = [
            (
                pairwise_seed(shared, session=params.session, pair=(self.member, name)),
                1 if own_rank < params.rank(name) else -1,
            )
            for name, shared in zip(held, agreements, strict=True)
        ]
        masked = mask_vector(
            to_ring(quantized, ring_bits=params.ring_bits),
            self_seed=self._self_seed,
            pair_seeds=pair_seeds,
            ring_bits=params.ring_bits,
        )
        self._held = held
        self._encryption_keys = self._masking_keys = None
        self._self_seed = None
        self._aead_keys = {}
        self._phase = Phase.UNMASK
        return MaskedInput(self.member, masked, params.ring_bits)

    def unmask(self, request: UnmaskRequest) -> UnmaskShares:
        """Phase 3: reveal the shares the aggregator needs, after :func:`check_unmask_request`."""
        self._enter(Phase.UNMASK)
        try:
            return self._unmask(request)
        finally:
            self._abort()

    def _unmask(self, request: UnmaskRequest) -> UnmaskShares:
        if request.recipient != self.member:
            raise VerificationError(f"member {self.member}: received the unmask request of {request.recipient}")
        check_unmask_request(request, member=self.member, holding=tuple(self._held), min_inputs=self.params.min_inputs)
        held = self._held
        return UnmaskShares(
            self.member,
            self_mask_shares={name: held[name][0] for name in request.survivors},
            masking_key_shares={name: held[name][1] for name in request.dropped},
        )
