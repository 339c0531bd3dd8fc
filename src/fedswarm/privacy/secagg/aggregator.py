"""The aggregator side of SecAgg+ (Bonawitz et al., 2017; Bell et al., 2020).

The aggregator routes messages and, at the end, removes the masks: it sums the masked inputs of the
members that sent one (``U3``), reconstructs from ``threshold`` shares the self-mask seed ``b_u`` of each
of them and the masking key ``s_v`` of each member that shared its keys but sent no input
(``U2 \\ U3``), subtracts ``PRG(b_u)`` and the pairwise masks that survivors added with dropped members,
and dequantizes. It only ever holds public keys, ciphertexts it forwards without keeping, the running
sum of masked vectors and, in phase 3, the shares members choose to reveal.

Dropouts: a member that misses a phase is dropped from that phase on. In phases 0 and 1, before any
input depends on a member, the aggregator also drops members with fewer than ``threshold`` live
neighbours (their secrets could never be reconstructed), repeating until stable. From phase 2 on, a
member whose secrets have fewer than ``threshold`` live holders makes the round abort. So the round
completes when every member keeps at least ``threshold`` of its ``degree`` neighbours, i.e. up to
``degree - threshold`` dropouts per neighbourhood, and at least ``min_inputs`` inputs remain; otherwise it
raises :class:`~fedswarm.core.errors.RoundAborted` naming the phase and how many members survived.

Each method takes the messages that arrived before the phase's deadline, in any order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from fedswarm.core.errors import FedswarmError, RoundAborted, UpdateRejected, VerificationError
from fedswarm.crypto.agreement import X25519_KEY_BYTES, x25519_public, x25519_shared_many
from fedswarm.crypto.prg import PRG_SEED_BYTES, prg_uint64
from fedswarm.privacy.secagg.member import pairwise_seed, ring_mask
from fedswarm.privacy.secagg.messages import (
    AdvertiseKeys,
    AggregateResult,
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
from fedswarm.privacy.secagg.quantize import dequantize
from fedswarm.privacy.secagg.shamir import ByteShare, recombine_bytes

__all__ = ["SecAggAggregator"]


class SecAggAggregator:
    """The aggregator's state through one SecAgg+ round; each method is one phase, called once, in order.

    Parameters
    ----------
    params
        The round's parameters, identical at every party.
    """

    def __init__(self, params: SecAggParams) -> None:
        self.params = params
        self._phase = Phase.ADVERTISE_KEYS
        self._public_keys: dict[str, AdvertiseKeys] = {}
        self._live: list[str] = []
        self._shared: list[str] = []
        self._contributors: list[str] = []
        self._masked_sum: npt.NDArray[np.uint64] | None = None

    @property
    def phase(self) -> Phase:
        """The next phase this aggregator expects."""
        return self._phase

    def _enter(self, phase: Phase) -> None:
        if self._phase != phase:
            raise VerificationError(f"aggregator: asked for {phase.label} while expecting {self._phase.label}")

    def _senders(self, phase: Phase, members: Sequence[str], allowed: Sequence[str]) -> list[str]:
        allowed_set = set(allowed)
        seen: set[str] = set()
        for member in members:
            if member not in allowed_set:
                raise UpdateRejected(member, f"{phase.label}: not a live member of this round")
            if member in seen:
                raise UpdateRejected(member, f"{phase.label}: sent twice")
            seen.add(member)
        return [m for m in self.params.roster if m in seen]

    def _live_neighbours(self, member: str, live: set[str]) -> list[str]:
        return [v for v in self.params.neighbours(member) if v in live]

    def _prune(self, phase: Phase, senders: list[str]) -> list[str]:
        """Drop members with fewer than ``threshold`` live neighbours until stable, then check the count."""
        live = set(senders)
        changed = True
        while changed:
            weak = {u for u in live if len(self._live_neighbours(u, live)) < self.params.threshold}
            live -= weak
            changed = bool(weak)
        kept = [m for m in senders if m in live]
        if len(kept) < self.params.min_inputs:
            self._phase = Phase.DONE
            raise RoundAborted(
                f"{phase.label}: {len(senders)} of {len(self.params.roster)} members survived, "
                f"{len(kept)} of them with at least threshold = {self.params.threshold} live neighbours; "
                f"need min_inputs = {self.params.min_inputs}"
            )
        return kept

    def collect_keys(self, messages: Sequence[AdvertiseKeys]) -> Mapping[str, NeighbourKeys]:
        """Phase 0: record public keys; answer each live member with its live neighbours' keys."""
        self._enter(Phase.ADVERTISE_KEYS)
        senders = self._senders(Phase.ADVERTISE_KEYS, [m.member for m in messages], self.params.roster)
        for message in messages:
            if len(message.encryption_key) != X25519_KEY_BYTES or len(message.masking_key) != X25519_KEY_BYTES:
                raise UpdateRejected(message.member, f"{Phase.ADVERTISE_KEYS.label}: public keys must be 32 bytes")
        by_member = {m.member: m for m in messages}
        self._live = self._prune(Phase.ADVERTISE_KEYS, senders)
        live = set(self._live)
        self._public_keys = {u: by_member[u] for u in self._live}
        self._phase = Phase.SHARE_KEYS
        return {u: NeighbourKeys(u, {v: by_member[v] for v in self._live_neighbours(u, live)}) for u in self._live}

    def route_shares(self, messages: Sequence[ShareKeys]) -> Mapping[str, ShareDelivery]:
        """Phase 1: forward each ciphertext to its recipient, among members that completed phase 1."""
        self._enter(Phase.SHARE_KEYS)
        senders = self._senders(Phase.SHARE_KEYS, [m.member for m in messages], self._live)
        live = set(self._live)
        for message in messages:
            expected = set(self._live_neighbours(message.member, live))
            recipients = [s.recipient for s in message.shares]
            if any(s.sender != message.member for s in message.shares) or sorted(recipients) != sorted(expected):
                raise UpdateRejected(message.member, f"{Phase.SHARE_KEYS.label}: not one ciphertext per live neighbour")
        self._shared = self._prune(Phase.SHARE_KEYS, senders)
        shared = set(self._shared)
        inbox: dict[str, list[EncryptedShares]] = {u: [] for u in self._shared}
        for message in messages:
            if message.member in shared:
                for item in message.shares:
                    if item.recipient in shared:
                        inbox[item.recipient].append(item)
        self._phase = Phase.MASKED_INPUT
        return {u: ShareDelivery(u, tuple(inbox[u])) for u in self._shared}

    def collect_masked(self, messages: Sequence[MaskedInput]) -> Mapping[str, UnmaskRequest]:
        """Phase 2: sum the masked inputs; ask each contributor for the shares needed to unmask."""
        self._enter(Phase.MASKED_INPUT)
        params = self.params
        senders = self._senders(Phase.MASKED_INPUT, [m.member for m in messages], self._shared)
        total = np.zeros(params.dimension, dtype=np.uint64)
        for message in messages:
            masked = message.masked
            if (
                message.ring_bits != params.ring_bits
                or masked.dtype != np.uint64
                or masked.shape != (params.dimension,)
                or (params.ring_bits < 64 and bool(np.any(masked >> np.uint64(params.ring_bits))))
            ):
                raise UpdateRejected(
                    message.member,
                    f"{Phase.MASKED_INPUT.label}: expected {params.dimension} elements of Z_2^{params.ring_bits}",
                )
            total += masked
        self._phase = Phase.DONE
        if len(senders) < params.min_inputs:
            raise RoundAborted(
                f"{Phase.MASKED_INPUT.label}: {len(senders)} of {len(params.roster)} members sent masked "
                f"input; need min_inputs = {params.min_inputs}"
            )
        contributors = set(senders)
        for u in self._shared:
            holders = self._live_neighbours(u, contributors)
            if len(holders) < params.threshold:
                secret = "self-mask seed" if u in contributors else "masking key"
                raise RoundAborted(
                    f"{Phase.MASKED_INPUT.label}: {len(senders)} of {len(params.roster)} members survived; "
                    f"the {secret} of member {u} has {len(holders)} live holders, need threshold = "
                    f"{params.threshold}"
                )
        shared = set(self._shared)
        self._contributors = senders
        self._masked_sum = total & ring_mask(params.ring_bits)
        self._phase = Phase.UNMASK
        return {
            u: UnmaskRequest(
                u,
                survivors=tuple(self._live_neighbours(u, contributors)),
                dropped=tuple(v for v in self._live_neighbours(u, shared) if v not in contributors),
                num_inputs=len(senders),
            )
            for u in senders
        }

    def finish(self, messages: Sequence[UnmaskShares]) -> AggregateResult:
        """Phase 3: reconstruct the needed secrets, remove every mask and return the sum."""
        self._enter(Phase.UNMASK)
        self._phase = Phase.DONE
        try:
            return self._finish(messages)
        finally:
            self._masked_sum = None

    def _finish(self, messages: Sequence[UnmaskShares]) -> AggregateResult:
        params = self.params
        responders = self._senders(Phase.UNMASK, [m.member for m in messages], self._contributors)
        contributors = set(self._contributors)
        dropped = [v for v in self._shared if v not in contributors]
        seed_points: dict[str, list[tuple[int, ByteShare]]] = {u: [] for u in self._contributors}
        key_points: dict[str, list[tuple[int, ByteShare]]] = {v: [] for v in dropped}
        for message in sorted(messages, key=lambda m: params.rank(m.member)):
            x = params.x_coordinate(message.member)
            neighbours = set(params.neighbours(message.member))
            for points, shares in ((seed_points, message.self_mask_shares), (key_points, message.masking_key_shares)):
                for owner, share in shares.items():
                    if owner not in points or owner not in neighbours:
                        raise UpdateRejected(message.member, f"{Phase.UNMASK.label}: unrequested share of {owner}")
                    points[owner].append((x, share))
        survived = f"{len(responders)} of {len(params.roster)} members survived"
        for kind, points in (("self-mask seed", seed_points), ("masking key", key_points)):
            for owner, got in points.items():
                if len(got) < params.threshold:
                    raise RoundAborted(
                        f"{Phase.UNMASK.label}: {survived}; {len(got)} shares of the {kind} of member {owner}, "
                        f"need threshold = {params.threshold}"
                    )
        total = self._masked_sum
        assert total is not None
        total = total.copy()
        for u, got in seed_points.items():
            total -= prg_uint64(self._recombine(u, got), params.dimension)
        for v, got in key_points.items():
            private = self._recombine(v, got)
            if x25519_public(private) != self._public_keys[v].masking_key:
                raise VerificationError(f"aggregator: reconstructed masking key of member {v} does not match its key")
            v_rank = params.rank(v)
            partners = self._live_neighbours(v, contributors)
            agreements = x25519_shared_many(private, [self._public_keys[u].masking_key for u in partners])
            for u, shared in zip(partners, agreements, strict=True):
                mask = prg_uint64(pairwise_seed(shared, session=params.session, pair=(u, v)), params.dimension)
                if params.rank(u) < v_rank:
                    total -= mask
                else:
                    total += mask
        total &= ring_mask(params.ring_bits)
        return AggregateResult(
            total=dequantize(total, clip=params.clip, bits=params.bits, ring_bits=params.ring_bits),
            ring_sum=total,
            contributors=tuple(self._contributors),
            dropped=tuple(m for m in params.roster if m not in contributors),
            error_bound=params.error_bound(len(self._contributors)),
        )

    def _recombine(self, owner: str, points: list[tuple[int, ByteShare]]) -> bytes:
        try:
            return recombine_bytes(points[: self.params.threshold], length=PRG_SEED_BYTES)
        except FedswarmError as exc:
            raise VerificationError(f"aggregator: shares of member {owner} are inconsistent: {exc}") from exc
