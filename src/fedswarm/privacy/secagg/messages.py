"""The messages of one SecAgg+ round (Bonawitz et al., 2017; Bell et al., 2020), transport-independent.

Every message is a frozen dataclass of ids, bytes, ints and numpy arrays; members send theirs to the
aggregator and the aggregator answers each member, so any transport (in-process calls, gRPC) can carry
them. The four phases, in order:

=====  ===================  =========================================================================
phase  member sends         aggregator answers each live member with
=====  ===================  =========================================================================
0      :class:`AdvertiseKeys`  :class:`NeighbourKeys` (its live neighbours' public keys)
1      :class:`ShareKeys`      :class:`ShareDelivery` (the ciphertexts its neighbours sent it)
2      :class:`MaskedInput`    :class:`UnmaskRequest` (which neighbours survived, which dropped)
3      :class:`UnmaskShares`   -- (the aggregator outputs an :class:`AggregateResult`)
=====  ===================  =========================================================================

:func:`wire_size` counts the bytes of a compact binary encoding of a message (ids as a 2-byte length
and UTF-8, byte strings with a 4-byte length, field elements as 16 bytes, masked vectors packed to
``ring_bits`` bits per element with :func:`~fedswarm.privacy.secagg.quantize.pack_ring`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import numpy.typing as npt

from fedswarm.privacy.secagg.quantize import packed_size
from fedswarm.privacy.secagg.shamir import ELEMENT_BYTES, ByteShare

__all__ = [
    "AdvertiseKeys",
    "AggregateResult",
    "EncryptedShares",
    "MaskedInput",
    "NeighbourKeys",
    "Phase",
    "SecAggMessage",
    "ShareDelivery",
    "ShareKeys",
    "UnmaskRequest",
    "UnmaskShares",
    "wire_size",
]


class Phase(IntEnum):
    """Protocol phases; a party's ``phase`` is the next one it expects to run."""

    ADVERTISE_KEYS = 0
    SHARE_KEYS = 1
    MASKED_INPUT = 2
    UNMASK = 3
    DONE = 4

    @property
    def label(self) -> str:
        """``"phase 2 (masked input)"`` style name for messages."""
        if self is Phase.DONE:
            return "nothing (round over)"
        return f"phase {int(self)} ({self.name.lower().replace('_', ' ')})"


@dataclass(frozen=True)
class AdvertiseKeys:
    """Phase 0, member to aggregator: two fresh X25519 public keys (32 bytes each)."""

    member: str
    encryption_key: bytes
    masking_key: bytes


@dataclass(frozen=True)
class NeighbourKeys:
    """Phase 0 answer: the advertised keys of the recipient's live neighbours, by member id."""

    recipient: str
    keys: Mapping[str, AdvertiseKeys]


@dataclass(frozen=True)
class EncryptedShares:
    """AES-GCM ciphertext of the sender's shares (self-mask seed and masking key) for one recipient."""

    sender: str
    recipient: str
    ciphertext: bytes


@dataclass(frozen=True)
class ShareKeys:
    """Phase 1, member to aggregator: one :class:`EncryptedShares` per live neighbour."""

    member: str
    shares: tuple[EncryptedShares, ...]


@dataclass(frozen=True)
class ShareDelivery:
    """Phase 1 answer: the ciphertexts addressed to the recipient by neighbours that completed phase 1."""

    recipient: str
    shares: tuple[EncryptedShares, ...]


@dataclass(frozen=True)
class MaskedInput:
    """Phase 2, member to aggregator: the masked quantized vector, elements of Z_{2^ring_bits}."""

    member: str
    masked: npt.NDArray[np.uint64]
    ring_bits: int


@dataclass(frozen=True)
class UnmaskRequest:
    """Phase 2 answer: the recipient's neighbours that sent masked input and those that did not.

    The recipient reveals its share of the self-mask seed of each survivor and its share of the masking
    key of each dropped neighbour, never both for one member. ``num_inputs`` is the number of masked
    inputs in the sum.
    """

    recipient: str
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]
    num_inputs: int


@dataclass(frozen=True)
class UnmaskShares:
    """Phase 3, member to aggregator: decrypted Shamir shares, keyed by the member they belong to."""

    member: str
    self_mask_shares: Mapping[str, ByteShare]
    masking_key_shares: Mapping[str, ByteShare]


@dataclass(frozen=True)
class AggregateResult:
    """The output of a round: the sum of the contributors' inputs and nothing else.

    ``total`` is the dequantized sum (within ``error_bound`` per coordinate of the sum of the clipped
    inputs), ``ring_sum`` the exact sum in Z_{2^ring_bits}.
    """

    total: npt.NDArray[np.float64]
    ring_sum: npt.NDArray[np.uint64]
    contributors: tuple[str, ...]
    dropped: tuple[str, ...]
    error_bound: float


SecAggMessage = AdvertiseKeys | NeighbourKeys | ShareKeys | ShareDelivery | MaskedInput | UnmaskRequest | UnmaskShares


def _id(member: str) -> int:
    return 2 + len(member.encode())


def _blob(data: bytes) -> int:
    return 4 + len(data)


def wire_size(message: SecAggMessage) -> int:
    """Bytes of ``message`` in the compact encoding described in the module docstring."""
    if isinstance(message, AdvertiseKeys):
        return _id(message.member) + len(message.encryption_key) + len(message.masking_key)
    if isinstance(message, NeighbourKeys):
        return _id(message.recipient) + sum(wire_size(keys) for keys in message.keys.values())
    if isinstance(message, ShareKeys):
        return _id(message.member) + sum(_id(s.recipient) + _blob(s.ciphertext) for s in message.shares)
    if isinstance(message, ShareDelivery):
        return _id(message.recipient) + sum(_id(s.sender) + _blob(s.ciphertext) for s in message.shares)
    if isinstance(message, MaskedInput):
        return _id(message.member) + 1 + 4 + packed_size(message.masked.size, bits=message.ring_bits)
    if isinstance(message, UnmaskRequest):
        return _id(message.recipient) + sum(_id(m) for m in message.survivors + message.dropped) + 4
    shares = [*message.self_mask_shares.items(), *message.masking_key_shares.items()]
    return _id(message.member) + sum(_id(m) + ELEMENT_BYTES * len(share) for m, share in shares)
