"""SecAgg+ inside a round (Bonawitz et al. 2017; Bell et al. 2020): four exchanges, masked vectors only.

The aggregator side is :class:`SecAggCollector`, a :class:`~fedswarm.rounds.collect.Collector` driving
:class:`~fedswarm.privacy.secagg.aggregator.SecAggAggregator` through the exchanges

==================  ================================================================================
``secagg.advertise``  the round's parameters down; two X25519 public keys up
``secagg.share``      live neighbours' keys down; AES-GCM-encrypted Shamir shares up
``secagg.fit``        the shares addressed to the member down; the member trains, applies its client
                      stages and client-level DP, quantizes and masks; the masked vector up
``secagg.unmask``     who survived and who dropped down; the shares needed to unmask up
==================  ================================================================================

and the member side is :class:`SecAggMemberSide`, whose handlers keep one
:class:`~fedswarm.privacy.secagg.member.SecAggMember` per member for the round, in the process where
that member runs. A member that fails a phase (its task raised, it was unreachable, a check failed)
comes back as a :class:`~fedswarm.rounds.messages.Dropout` and is dropped from the protocol from that
phase on; the protocol recovers while every member keeps at least ``threshold`` of its ``degree``
neighbours and at least ``min_inputs`` inputs remain, and otherwise the round aborts with
:class:`~fedswarm.core.errors.RoundAborted` naming the phase and the survivors.

What the aggregator holds: public keys, ciphertexts it routes, the masked vectors (elements of
``Z_{2^R}``, uniformly distributed to anyone without the masks) and, after phase 3, the sum. With
``keep_view`` the collector keeps the masked vectors of the last round in :attr:`SecAggCollector.view`
for audits and tests; nothing else about individual members is kept.

Weighting: every contributor counts once (the coordinator averages the released sum over the count); a
member's number of examples is not sent. Parameters of each round: the roster is the sampled cohort in
member order, the session is a digest of the federation, its seed, the round and the roster (a deployment
should bind it to the ledger head as well), and the degree, threshold and ring follow ``[privacy.secagg]``
(:func:`secagg_params`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from fedswarm.codec import canonical
from fedswarm.core.errors import ConfigurationError, FedswarmError, RoundAborted, UpdateRejected
from fedswarm.privacy.secagg.aggregator import SecAggAggregator
from fedswarm.privacy.secagg.graph import default_degree, degree_for_dropout
from fedswarm.privacy.secagg.member import SecAggMember
from fedswarm.privacy.secagg.messages import MaskedInput, wire_size
from fedswarm.privacy.secagg.params import SecAggParams
from fedswarm.privacy.secagg.quantize import Rounding
from fedswarm.rounds.collect import Collection, CollectorGenerator
from fedswarm.rounds.member import MemberHandler, MemberRuntime
from fedswarm.rounds.messages import Dropout, Exchange, FitRequest
from fedswarm.rounds.privacy.member import MemberProtection
from fedswarm.rounds.privacy.messages import (
    FitOrder,
    SecAggAdvertise,
    SecAggFitRequest,
    SecAggKeys,
    SecAggMasked,
    SecAggNeighbours,
    SecAggRevealed,
    SecAggShares,
    SecAggUnmask,
)
from fedswarm.rounds.privacy.release import SumRelease
from fedswarm.rounds.privacy.wire import expect
from fedswarm.rounds.stages import ServerContext

__all__ = [
    "KIND_ADVERTISE",
    "KIND_FIT",
    "KIND_SHARE",
    "KIND_UNMASK",
    "SecAggCollector",
    "SecAggMemberSide",
    "SecAggSettings",
    "safe_threshold",
    "secagg_params",
    "session_id",
]

KIND_ADVERTISE = "secagg.advertise"
KIND_SHARE = "secagg.share"
KIND_FIT = "secagg.fit"
KIND_UNMASK = "secagg.unmask"

R = TypeVar("R")


def safe_threshold(degree: int) -> int:
    """Smallest threshold above half of a neighbourhood of ``degree + 1`` members (the member included)."""
    return (degree + 1) // 2 + 1


class SecAggSettings:
    """The ``[privacy.secagg]`` knobs that shape each round's :class:`SecAggParams`."""

    def __init__(
        self,
        *,
        bits: int,
        clip: float | None,
        rounding: Rounding,
        degree: int | None,
        dropout_tolerance: float | None,
        threshold: int | None,
        min_inputs: int | None,
        keep_view: bool,
    ) -> None:
        self.bits = bits
        self.clip = clip
        self.rounding: Rounding = rounding
        self.degree = degree
        self.dropout_tolerance = dropout_tolerance
        self.threshold = threshold
        self.min_inputs = min_inputs
        self.keep_view = keep_view


def session_id(*, federation: str, seed: int, rnd: int, roster: Sequence[str]) -> bytes:
    """Public session bytes (32): a digest of the federation name, its seed, the round and the roster
    (so that several secure sums in one round, one per group of members, get distinct sessions)."""
    return canonical.digest(
        {
            "context": "fedswarm/secagg/session/v1",
            "federation": federation,
            "seed": seed,
            "round": rnd,
            "roster": list(roster),
        }
    )


def secagg_params(
    roster: Sequence[str],
    *,
    settings: SecAggSettings,
    session: bytes,
    dimension: int,
    value_range: float,
    min_inputs: int | None = None,
) -> SecAggParams:
    """The parameters of one round; refusals are :class:`ConfigurationError` naming ``privacy.secagg.*``.

    The threshold must exceed half of a member's neighbourhood counting the member itself
    (``2 * threshold > degree + 1``; for the complete graph, more than half of the cohort), one more
    than the protocol's own bound ``2 * threshold > degree``.
    """
    m = len(roster)
    try:
        if m < 3:
            raise ConfigurationError(f"roster: secure aggregation needs at least 3 members per round, got {m}")
        if settings.degree is not None:
            degree = settings.degree
        elif settings.dropout_tolerance is not None:
            degree = degree_for_dropout(m, dropout_rate=settings.dropout_tolerance)
        else:
            degree = default_degree(m)
            if degree % 2 and m % 2:
                degree = min(degree + 1, m - 1)
        if degree > m - 1:
            raise ConfigurationError(f"degree: {degree} exceeds the {m - 1} other members of a round")
        threshold = settings.threshold if settings.threshold is not None else safe_threshold(degree)
        if 2 * threshold <= degree + 1:
            raise ConfigurationError(
                f"threshold: Shamir threshold at or below half the members ({threshold} of a neighbourhood of "
                f"{degree + 1} members, the member and its {degree} neighbours); it must exceed {(degree + 1) / 2}, "
                f"e.g. {safe_threshold(degree)}"
            )
        wanted = max(x for x in (threshold, settings.min_inputs or 0, min_inputs or 0))
        return SecAggParams.create(
            list(roster),
            session=session,
            dimension=dimension,
            clip=value_range,
            bits=settings.bits,
            degree=degree,
            threshold=threshold,
            min_inputs=min(wanted, m),
            rounding=settings.rounding,
        )
    except ConfigurationError as exc:
        text = str(exc)
        if text.startswith("privacy."):
            raise
        raise ConfigurationError(f"privacy.secagg.{text}") from None


def _params_bytes(params: SecAggParams) -> bytes:
    return canonical.encode(params.state_dict())


def _params_from(data: bytes) -> SecAggParams:
    state = canonical.decode(data)
    if not isinstance(state, dict):
        raise ConfigurationError("secagg parameters: not a mapping")
    return SecAggParams.from_state_dict(state)


class SecAggMemberSide:
    """Member handlers of the four SecAgg+ exchanges; holds each member's protocol state for the round."""

    def __init__(self, protection: MemberProtection) -> None:
        self.protection = protection
        self._members: dict[int, tuple[int, SecAggMember]] = {}

    def handlers(self) -> dict[str, MemberHandler]:
        return {
            KIND_ADVERTISE: self.advertise,
            KIND_SHARE: self.share,
            KIND_FIT: self.fit,
            KIND_UNMASK: self.unmask,
        }

    def _state(self, runtime: MemberRuntime, member: int, rnd: int) -> SecAggMember:
        entry = self._members.get(member)
        if entry is None or entry[0] != rnd:
            raise RoundAborted(f"{runtime.member_name(member)}: no SecAgg+ state for round {rnd}")
        return entry[1]

    def advertise(self, runtime: MemberRuntime, member: int, request: Any, global_vector: Any) -> SecAggKeys:
        request = expect(request, SecAggAdvertise, kind=KIND_ADVERTISE)
        params = _params_from(request.params)
        state = SecAggMember(runtime.member_name(member), params)
        self._members[member] = (request.round, state)
        return SecAggKeys.of(state.advertise_keys())

    def share(self, runtime: MemberRuntime, member: int, request: Any, global_vector: Any) -> SecAggShares:
        request = expect(request, SecAggNeighbours, kind=KIND_SHARE)
        return SecAggShares.of(self._state(runtime, member, request.round).share_keys(request.to_protocol()))

    def fit(
        self, runtime: MemberRuntime, member: int, request: Any, global_vector: npt.NDArray[np.float64]
    ) -> SecAggMasked | Dropout:
        request = expect(request, SecAggFitRequest, kind=KIND_FIT)
        state = self._state(runtime, member, request.order.round)
        out = self.protection.protected_update(runtime, member, request.order, request.privacy, global_vector)
        if isinstance(out, Dropout):
            self._members.pop(member, None)
            return out
        return SecAggMasked.of(state.masked_input(out.vector, request.delivery()))

    def unmask(self, runtime: MemberRuntime, member: int, request: Any, global_vector: Any) -> SecAggRevealed:
        request = expect(request, SecAggUnmask, kind=KIND_UNMASK)
        state = self._state(runtime, member, request.round)
        self._members.pop(member, None)
        return SecAggRevealed.of(state.unmask(request.to_protocol()))


class SecAggCollector:
    """Aggregator side of SecAgg+ (see the module docstring).

    Parameters
    ----------
    release
        The run's DP release state (also when ``dp = "none"``: the plain sum).
    settings
        ``[privacy.secagg]``.
    federation, seed
        Bind each round's session.
    default_range
        Per-coordinate range when DP does not bound it (``privacy.secagg.clip`` or ``stages.clip``).
    min_contributors
        ``strategy.min_members``: the fewest inputs a released sum may have.
    """

    reveals_individual_updates = False

    def __init__(
        self,
        release: SumRelease,
        *,
        settings: SecAggSettings,
        federation: str,
        seed: int,
        default_range: float | None,
        min_contributors: int,
    ) -> None:
        self.release = release
        self.settings = settings
        self.federation = federation
        self.seed = seed
        self.default_range = default_range
        self.min_contributors = int(min_contributors)
        self.view: dict[str, npt.NDArray[np.uint64]] = {}
        self.last_round: dict[str, Any] = {}

    def value_range(self) -> float:
        """The quantization range of this round."""
        if self.settings.clip is not None:
            return self.settings.clip
        dp_range = self.release.value_range()
        if dp_range is not None:
            return dp_range
        if self.default_range is None:
            raise ConfigurationError(
                "privacy.secagg.clip: secure aggregation quantizes every coordinate into [-clip, clip]; set it "
                "(or stages.clip, or client-level DP's privacy.clip) to bound the update coordinates"
            )
        return self.default_range

    def params(self, roster: Sequence[str], *, rnd: int, dimension: int) -> SecAggParams:
        """This round's parameters for ``roster``."""
        min_inputs = self.min_contributors
        if self.release.mode == "distributed":
            min_inputs = max(min_inputs, self.release.min_survivors)
        return secagg_params(
            roster,
            settings=self.settings,
            session=session_id(federation=self.federation, seed=self.seed, rnd=rnd, roster=roster),
            dimension=dimension + self.release.extra,
            value_range=self.value_range(),
            min_inputs=min_inputs,
        )

    @staticmethod
    def _gather(
        replies: Mapping[int, Any],
        expected: Sequence[int],
        kind: type[R],
        *,
        phase: str,
        dropouts: dict[int, str],
        member_name: Callable[[int], str],
    ) -> dict[int, R]:
        out: dict[int, R] = {}
        for m in expected:
            reply = replies.get(m)
            if isinstance(reply, kind):
                out[m] = reply
            elif isinstance(reply, Dropout):
                dropouts.setdefault(m, f"{phase}: {reply.reason}")
            else:
                got = "no reply" if reply is None else f"unexpected reply {type(reply).__name__}"
                dropouts.setdefault(m, f"{phase}: {member_name(m)}: {got}")
        return out

    def collect(
        self,
        rnd: int,
        requests: Mapping[int, FitRequest],
        *,
        dimension: int,
        ctx: ServerContext,
        screen: Callable[[int, npt.NDArray[np.float64]], str | None],
        member_name: Callable[[int], str],
    ) -> CollectorGenerator:
        ids = sorted(requests)
        names = {m: member_name(m) for m in ids}
        by_name = {name: m for m, name in names.items()}
        params = self.params([names[m] for m in ids], rnd=rnd, dimension=dimension)
        aggregator = SecAggAggregator(params)
        release = self.release
        privacy = release.member_privacy()
        dropouts: dict[int, str] = {}
        up = down = 0
        self.view = {}

        def aborted(exc: FedswarmError) -> RoundAborted:
            gone = "; ".join(list(dropouts.values())[:5])
            return RoundAborted(
                f"round {rnd}: secure aggregation (SecAgg+) aborted: {exc}"
                + (f". Dropouts: {gone}" if gone else "")
                + f" (threshold {params.threshold} of {params.degree} neighbours, min_inputs {params.min_inputs})"
            )

        try:
            # phase 0: keys
            blob = _params_bytes(params)
            replies = yield Exchange(KIND_ADVERTISE, rnd, {m: SecAggAdvertise(rnd, blob) for m in ids})
            down += len(blob) * len(ids)
            adverts = self._gather(replies, ids, SecAggKeys, phase="phase 0 (advertise keys)",
                                   dropouts=dropouts, member_name=member_name)  # fmt: skip
            messages = [adverts[m].to_protocol() for m in sorted(adverts)]
            up += sum(wire_size(x) for x in messages)
            keys = aggregator.collect_keys(messages)
            for m in adverts:
                if names[m] not in keys:
                    dropouts[m] = f"{names[m]}: pruned in phase 0: fewer than threshold live neighbours"
            # phase 1: encrypted shares
            share_requests = {by_name[u]: SecAggNeighbours.of(rnd, k) for u, k in keys.items()}
            down += sum(wire_size(k) for k in keys.values())
            replies = yield Exchange(KIND_SHARE, rnd, share_requests)
            shares = self._gather(replies, sorted(share_requests), SecAggShares, phase="phase 1 (share keys)",
                                  dropouts=dropouts, member_name=member_name)  # fmt: skip
            share_messages = [shares[m].to_protocol() for m in sorted(shares)]
            up += sum(wire_size(x) for x in share_messages)
            deliveries = aggregator.route_shares(share_messages)
            for m in shares:
                if names[m] not in deliveries:
                    dropouts[m] = f"{names[m]}: pruned in phase 1: fewer than threshold live neighbours"
            # phase 2: train, protect, mask
            fit_requests: dict[int, SecAggFitRequest] = {}
            for u, delivery in deliveries.items():
                m = by_name[u]
                fit_requests[m] = SecAggFitRequest(
                    order=FitOrder.from_config(requests[m].config),
                    privacy=privacy,
                    recipient=u,
                    senders=tuple(s.sender for s in delivery.shares),
                    ciphertexts=tuple(s.ciphertext for s in delivery.shares),
                )
                down += wire_size(delivery)
            replies = yield Exchange(KIND_FIT, rnd, fit_requests)
            masked_replies = self._gather(replies, sorted(fit_requests), SecAggMasked, phase="phase 2 (masked input)",
                                          dropouts=dropouts, member_name=member_name)  # fmt: skip
            masked: list[MaskedInput] = []
            for m in sorted(masked_replies):
                item = masked_replies[m].to_protocol()
                if item.member != names[m]:
                    raise UpdateRejected(names[m], f"masked input claims to come from {item.member}")
                masked.append(item)
                up += wire_size(item)
                if self.settings.keep_view:
                    self.view[item.member] = item.masked.copy()
            release.check_contributors(len(masked))
            if len(masked) < self.min_contributors:
                raise RoundAborted(
                    f"{len(masked)} masked inputs, fewer than strategy.min_members = {self.min_contributors}"
                )
            unmask = aggregator.collect_masked(masked)
            # phase 3: unmask
            unmask_requests = {by_name[u]: SecAggUnmask.of(rnd, r) for u, r in unmask.items()}
            down += sum(wire_size(r) for r in unmask.values())
            replies = yield Exchange(KIND_UNMASK, rnd, unmask_requests)
            late: dict[int, str] = {}
            revealed = self._gather(replies, sorted(unmask_requests), SecAggRevealed, phase="phase 3 (unmask)",
                                    dropouts=late, member_name=member_name)  # fmt: skip
            reveal_messages = [revealed[m].to_protocol() for m in sorted(revealed)]
            up += sum(wire_size(x) for x in reveal_messages)
            result = aggregator.finish(reveal_messages)
        except (RoundAborted, UpdateRejected, ConfigurationError) as exc:
            raise aborted(exc) from None
        contributors = sorted(by_name[u] for u in result.contributors)
        for m in ids:
            if m not in contributors:
                dropouts.setdefault(m, f"{names[m]}: no masked input")
        total, count = release.release(
            result.total,
            dimension=dimension,
            contributors=len(contributors),
            cohort=len(ids),
            noise_added=False,
        )
        self.last_round = {
            "transport": "secagg+",
            "contributors": len(contributors),
            "unmask_dropouts": len(late),
            "degree": params.degree,
            "threshold": params.threshold,
            "ring_bits": params.ring_bits,
            "quantization_error_bound": result.error_bound,
            "value_range": params.clip,
        }
        if not math.isfinite(result.error_bound):  # pragma: no cover - defensive
            raise RoundAborted(f"round {rnd}: secure aggregation produced an unbounded error")
        return Collection(
            members=contributors,
            updates=None,
            weights=np.zeros(0),
            total=total,
            count=count,
            dropouts=dropouts,
            bytes_up=up,
            extra_bytes_down=down,
        )
