"""Requests and replies of the privacy exchanges; each one is a :class:`~.wire.WireMessage`.

=====================  ===========================  ==============================================
exchange kind          request                      reply
=====================  ===========================  ==============================================
``privacy.fit``        :class:`PrivateFitRequest`   :class:`PrivateFitReply` (update in the clear)
``secagg.advertise``   :class:`SecAggAdvertise`     :class:`SecAggKeys`
``secagg.share``       :class:`SecAggNeighbours`    :class:`SecAggShares`
``secagg.fit``         :class:`SecAggFitRequest`    :class:`SecAggMasked`
``secagg.unmask``      :class:`SecAggUnmask`        :class:`SecAggRevealed`
``ckks.fit``           :class:`CKKSFitRequest`      :class:`CKKSEncrypted`
``ckks.decrypt``       :class:`CKKSDecryptRequest`  :class:`CKKSDecrypted`
=====================  ===========================  ==============================================

The global model does not travel in these requests: like every member handler, the member side gets
the round's global vector from whoever delivers the exchange (in simulation, the engine; over the
network, the round's model transfer).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedswarm.codec import canonical
from fedswarm.core.errors import VerificationError
from fedswarm.core.task import FitConfig, Scalar
from fedswarm.privacy.secagg.messages import (
    AdvertiseKeys,
    EncryptedShares,
    MaskedInput,
    NeighbourKeys,
    ShareDelivery,
    ShareKeys,
    UnmaskRequest,
    UnmaskShares,
)
from fedswarm.privacy.secagg.quantize import pack_ring, packed_size, unpack_ring
from fedswarm.rounds.privacy.wire import WireMessage

__all__ = [
    "CKKSDecryptRequest",
    "CKKSDecrypted",
    "CKKSEncrypted",
    "CKKSFitRequest",
    "FitOrder",
    "MemberPrivacy",
    "PrivateFitReply",
    "PrivateFitRequest",
    "SecAggAdvertise",
    "SecAggFitRequest",
    "SecAggKeys",
    "SecAggMasked",
    "SecAggNeighbours",
    "SecAggRevealed",
    "SecAggShares",
    "SecAggUnmask",
]


@dataclass(frozen=True)
class FitOrder(WireMessage):
    """The round's training configuration (a :class:`~fedswarm.core.task.FitConfig`), ``extra`` canonical."""

    round: int
    epochs: int
    batch_size: int
    learning_rate: float
    seed: int
    proximal_mu: float
    extra: bytes

    @classmethod
    def from_config(cls, config: FitConfig) -> FitOrder:
        return cls(
            round=config.round,
            epochs=config.epochs,
            batch_size=config.batch_size,
            learning_rate=float(config.learning_rate),
            seed=config.seed,
            proximal_mu=float(config.proximal_mu),
            extra=canonical.encode(dict(config.extra)),
        )

    def to_config(self) -> FitConfig:
        extra = canonical.decode(self.extra)
        if not isinstance(extra, dict) or not all(isinstance(v, bool | int | float | str) for v in extra.values()):
            raise VerificationError("fit order: extra must be a mapping of scalars")
        scalars: dict[str, Scalar] = dict(extra)
        return FitConfig(
            round=self.round,
            epochs=self.epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            seed=self.seed,
            proximal_mu=self.proximal_mu,
            extra=scalars,
        )


@dataclass(frozen=True)
class MemberPrivacy(WireMessage):
    """What a member does to its update this round before it leaves (0 disables a step).

    ``clip``: L2 clip of client-level DP. ``update_noise_std`` / ``count_noise_std``: the member's share
    of distributed noise on the update coordinates and on the unclipped bit. ``report_unclipped``:
    append the bit ``[||u|| <= clip]`` as a last coordinate (adaptive clipping).
    """

    clip: float
    update_noise_std: float
    count_noise_std: float
    report_unclipped: bool


@dataclass(frozen=True)
class PrivateFitRequest(WireMessage):
    order: FitOrder
    privacy: MemberPrivacy


@dataclass(frozen=True, eq=False)
class PrivateFitReply(WireMessage):
    """An update sent in the clear (possibly clipped, with a trailing unclipped bit); ``num_examples`` is
    0 when the member withholds it (DP: a count of records is not protected)."""

    member: str
    vector: npt.NDArray[np.float64]
    num_examples: int
    metric_names: tuple[str, ...]
    metric_values: tuple[float, ...]


# --- SecAgg+ -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SecAggAdvertise(WireMessage):
    """Phase 0 request: the round's SecAgg+ parameters (canonical ``SecAggParams.state_dict()``)."""

    round: int
    params: bytes


@dataclass(frozen=True)
class SecAggKeys(WireMessage):
    """Phase 0 reply: two X25519 public keys."""

    member: str
    encryption_key: bytes
    masking_key: bytes

    @classmethod
    def of(cls, keys: AdvertiseKeys) -> SecAggKeys:
        return cls(keys.member, keys.encryption_key, keys.masking_key)

    def to_protocol(self) -> AdvertiseKeys:
        return AdvertiseKeys(self.member, self.encryption_key, self.masking_key)


@dataclass(frozen=True)
class SecAggNeighbours(WireMessage):
    """Phase 1 request: the live neighbours' public keys."""

    round: int
    recipient: str
    keys: tuple[SecAggKeys, ...]

    @classmethod
    def of(cls, rnd: int, message: NeighbourKeys) -> SecAggNeighbours:
        return cls(rnd, message.recipient, tuple(SecAggKeys.of(k) for k in message.keys.values()))

    def to_protocol(self) -> NeighbourKeys:
        return NeighbourKeys(self.recipient, {k.member: k.to_protocol() for k in self.keys})


@dataclass(frozen=True)
class SecAggShares(WireMessage):
    """Phase 1 reply: one AES-GCM ciphertext of Shamir shares per live neighbour."""

    member: str
    recipients: tuple[str, ...]
    ciphertexts: tuple[bytes, ...]

    @classmethod
    def of(cls, message: ShareKeys) -> SecAggShares:
        return cls(
            message.member,
            tuple(s.recipient for s in message.shares),
            tuple(s.ciphertext for s in message.shares),
        )

    def to_protocol(self) -> ShareKeys:
        if len(self.recipients) != len(self.ciphertexts):
            raise VerificationError(f"secagg shares of {self.member}: recipients and ciphertexts differ in number")
        return ShareKeys(
            self.member,
            tuple(EncryptedShares(self.member, r, c) for r, c in zip(self.recipients, self.ciphertexts, strict=True)),
        )


@dataclass(frozen=True)
class SecAggFitRequest(WireMessage):
    """Phase 2 request: train, protect, and mask; carries the ciphertexts addressed to the member."""

    order: FitOrder
    privacy: MemberPrivacy
    recipient: str
    senders: tuple[str, ...]
    ciphertexts: tuple[bytes, ...]

    def delivery(self) -> ShareDelivery:
        if len(self.senders) != len(self.ciphertexts):
            raise VerificationError(f"secagg delivery for {self.recipient}: senders and ciphertexts differ")
        return ShareDelivery(
            self.recipient,
            tuple(EncryptedShares(s, self.recipient, c) for s, c in zip(self.senders, self.ciphertexts, strict=True)),
        )


@dataclass(frozen=True)
class SecAggMasked(WireMessage):
    """Phase 2 reply: the masked vector packed to ``ring_bits`` bits per element."""

    member: str
    ring_bits: int
    length: int
    packed: bytes

    @classmethod
    def of(cls, message: MaskedInput) -> SecAggMasked:
        return cls(
            message.member,
            message.ring_bits,
            int(message.masked.shape[0]),
            pack_ring(message.masked, bits=message.ring_bits),
        )

    def to_protocol(self) -> MaskedInput:
        if len(self.packed) != packed_size(self.length, bits=self.ring_bits):
            raise VerificationError(f"secagg masked input of {self.member}: wrong packed length")
        return MaskedInput(
            self.member, unpack_ring(self.packed, bits=self.ring_bits, length=self.length), self.ring_bits
        )


@dataclass(frozen=True)
class SecAggUnmask(WireMessage):
    """Phase 3 request: which neighbours survived and which dropped."""

    round: int
    recipient: str
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]
    num_inputs: int

    @classmethod
    def of(cls, rnd: int, message: UnmaskRequest) -> SecAggUnmask:
        return cls(rnd, message.recipient, message.survivors, message.dropped, message.num_inputs)

    def to_protocol(self) -> UnmaskRequest:
        return UnmaskRequest(self.recipient, self.survivors, self.dropped, self.num_inputs)


@dataclass(frozen=True)
class SecAggRevealed(WireMessage):
    """Phase 3 reply: shares of survivors' self-mask seeds and of dropped members' masking keys."""

    member: str
    seed_owners: tuple[str, ...]
    seed_shares: tuple[tuple[int, ...], ...]
    key_owners: tuple[str, ...]
    key_shares: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, message: UnmaskShares) -> SecAggRevealed:
        return cls(
            message.member,
            tuple(message.self_mask_shares),
            tuple(message.self_mask_shares.values()),
            tuple(message.masking_key_shares),
            tuple(message.masking_key_shares.values()),
        )

    def to_protocol(self) -> UnmaskShares:
        if len(self.seed_owners) != len(self.seed_shares) or len(self.key_owners) != len(self.key_shares):
            raise VerificationError(f"secagg unmask shares of {self.member}: owners and shares differ in number")
        return UnmaskShares(
            self.member,
            dict(zip(self.seed_owners, self.seed_shares, strict=True)),
            dict(zip(self.key_owners, self.key_shares, strict=True)),
        )


# --- CKKS ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CKKSFitRequest(WireMessage):
    order: FitOrder
    privacy: MemberPrivacy


@dataclass(frozen=True)
class CKKSEncrypted(WireMessage):
    """The member's vector of ``length`` values as serialized CKKS ciphertexts, one per chunk; ``decrypts``:
    whether the member holds the secret context (a star aggregator that trains does not), i.e. whether the
    coordinator may ask it to decrypt the sum."""

    member: str
    length: int
    chunks: tuple[bytes, ...]
    decrypts: bool


@dataclass(frozen=True)
class CKKSDecryptRequest(WireMessage):
    """Decrypt the sum of ``num_inputs`` encrypted vectors."""

    round: int
    length: int
    num_inputs: int
    chunks: tuple[bytes, ...]


@dataclass(frozen=True, eq=False)
class CKKSDecrypted(WireMessage):
    member: str
    total: npt.NDArray[np.float64]
