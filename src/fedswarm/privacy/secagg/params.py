"""Parameters of one SecAgg+ round, checked for safety when they are built.

The refusals:

* ``threshold * 2 <= degree`` -- "Shamir threshold at or below half the members": two disjoint groups of
  neighbours could then each reconstruct a member's secrets, one asking for the mask key and the
  other for the self-mask seed, which unmasks that member's input (Bonawitz et al., 2017, section 4);
* ``threshold < 2`` -- every single neighbour would hold the secret itself;
* a ring too small for the sum of all members' quantized inputs (the sum would wrap) or above 64 bits;
* a graph degree with no regular graph (see :mod:`fedswarm.privacy.secagg.graph`).

The round tolerates, for every member, up to ``degree - threshold`` neighbours that drop out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, get_args

from fedswarm.core.errors import ConfigurationError
from fedswarm.privacy.secagg.graph import default_degree, harary_graph, neighbour_graph
from fedswarm.privacy.secagg.quantize import (
    MAX_RING_BITS,
    Rounding,
    quantization_error_bound,
    quantization_scale,
    required_ring_bits,
)

__all__ = ["MIN_SESSION_BYTES", "SecAggParams"]

MIN_SESSION_BYTES = 16


@dataclass(frozen=True)
class SecAggParams:
    """Everything the members and the aggregator of one round agree on before it starts.

    Attributes
    ----------
    roster
        Member ids, in a fixed order; a member's Shamir x-coordinate is its position plus one, and of
        two neighbours the one earlier in the roster adds their pairwise mask, the other subtracts it.
    session
        Public, unique per round, at least 16 bytes (e.g. a digest of the round id and the ledger head);
        binds keys, ciphertexts and the neighbour graph to the round.
    dimension
        Length of the flat vector every member contributes.
    clip, bits, rounding
        Quantization (see :mod:`fedswarm.privacy.secagg.quantize`).
    ring_bits
        The ring is Z_{2^ring_bits}; at least ``bits + ceil(log2 len(roster))``.
    degree
        Neighbours per member (``len(roster) - 1`` for the complete graph of Bonawitz et al., 2017).
    threshold
        Shares needed to reconstruct a member's secrets; ``degree / 2 < threshold <= degree``.
    min_inputs
        The round aborts rather than reveal a sum of fewer masked inputs than this.
    """

    roster: tuple[str, ...]
    session: bytes
    dimension: int
    clip: float
    bits: int
    ring_bits: int
    degree: int
    threshold: int
    min_inputs: int
    rounding: Rounding

    def __post_init__(self) -> None:
        n = len(self.roster)
        if n < 3:
            raise ConfigurationError(f"roster: secure aggregation needs at least 3 members, got {n}")
        if len(set(self.roster)) != n or not all(isinstance(m, str) and m for m in self.roster):
            raise ConfigurationError("roster: member ids must be distinct non-empty strings")
        if len(self.session) < MIN_SESSION_BYTES:
            raise ConfigurationError(f"session: {len(self.session)} bytes, need at least {MIN_SESSION_BYTES}")
        if self.dimension < 1:
            raise ConfigurationError(f"dimension: {self.dimension} must be at least 1")
        if self.rounding not in get_args(Rounding):
            raise ConfigurationError(f"rounding: {self.rounding!r} is not one of {get_args(Rounding)}")
        quantization_scale(clip=self.clip, bits=self.bits)
        needed = required_ring_bits(n, bits=self.bits)
        if not needed <= self.ring_bits <= MAX_RING_BITS:
            raise ConfigurationError(
                f"ring_bits: {self.ring_bits} is outside {needed}..{MAX_RING_BITS}; the sum of {n} members' "
                f"{self.bits}-bit inputs needs {needed} bits or it overflows"
            )
        harary_graph(n, degree=self.degree)
        if 2 * self.threshold <= self.degree:
            raise ConfigurationError(
                f"threshold: Shamir threshold at or below half the members ({self.threshold} of "
                f"{self.degree} neighbours); it must exceed {self.degree / 2}"
            )
        if not 2 <= self.threshold <= self.degree:
            raise ConfigurationError(f"threshold: {self.threshold} is outside 2..{self.degree} (the degree)")
        if not 2 <= self.min_inputs <= n:
            raise ConfigurationError(f"min_inputs: {self.min_inputs} is outside 2..{n}")

    @classmethod
    def create(
        cls,
        roster: Sequence[str],
        *,
        session: bytes,
        dimension: int,
        clip: float,
        bits: int = 16,
        degree: int | None = None,
        threshold: int | None = None,
        min_inputs: int | None = None,
        rounding: Rounding = "stochastic",
    ) -> SecAggParams:
        """Build parameters with safe defaults.

        ``degree`` defaults to :func:`~fedswarm.privacy.secagg.graph.default_degree` (rounded up to an
        even number when the roster size is odd), ``threshold`` to ``degree // 2 + 1`` (the most
        dropout-tolerant safe value), ``min_inputs`` to ``threshold`` (Bonawitz et al.'s rule) and the
        ring to the smallest one that cannot overflow. For an expected dropout rate, pass
        ``degree=degree_for_dropout(len(roster), dropout_rate=...)`` from
        :mod:`fedswarm.privacy.secagg.graph`.
        """
        members = tuple(roster)
        n = len(members)
        if degree is None:
            degree = default_degree(n) if n >= 2 else 1
            if degree % 2 and n % 2:
                degree = min(degree + 1, n - 1)
        if threshold is None:
            threshold = degree // 2 + 1
        ring_bits = required_ring_bits(max(n, 1), bits=bits)
        return cls(
            roster=members,
            session=bytes(session),
            dimension=dimension,
            clip=float(clip),
            bits=bits,
            ring_bits=ring_bits,
            degree=degree,
            threshold=threshold,
            min_inputs=threshold if min_inputs is None else min_inputs,
            rounding=rounding,
        )

    @cached_property
    def graph(self) -> Mapping[str, tuple[str, ...]]:
        """The neighbour graph, derived from ``session``."""
        return neighbour_graph(self.roster, degree=self.degree, seed=self.session)

    @cached_property
    def _rank(self) -> Mapping[str, int]:
        return {member: i for i, member in enumerate(self.roster)}

    def rank(self, member: str) -> int:
        """Position of ``member`` in the roster; raises :class:`ConfigurationError` for strangers."""
        try:
            return self._rank[member]
        except KeyError:
            raise ConfigurationError(f"member {member!r} is not in the round's roster") from None

    def x_coordinate(self, member: str) -> int:
        """The Shamir evaluation point of the shares ``member`` holds."""
        return self.rank(member) + 1

    def neighbours(self, member: str) -> tuple[str, ...]:
        """The members ``member`` shares secrets and masks with."""
        self.rank(member)
        return self.graph[member]

    def error_bound(self, num_inputs: int) -> float:
        """Per-coordinate bound on the quantization error of a sum of ``num_inputs`` clipped inputs."""
        return quantization_error_bound(num_inputs, clip=self.clip, bits=self.bits, rounding=self.rounding)

    def state_dict(self) -> dict[str, Any]:
        """A plain dict (canonical-encodable) that :meth:`from_state_dict` turns back into the params."""
        return {
            "roster": list(self.roster),
            "session": self.session,
            "dimension": self.dimension,
            "clip": self.clip,
            "bits": self.bits,
            "ring_bits": self.ring_bits,
            "degree": self.degree,
            "threshold": self.threshold,
            "min_inputs": self.min_inputs,
            "rounding": self.rounding,
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> SecAggParams:
        """Rebuild (and re-check) parameters saved with :meth:`state_dict`."""
        return cls(
            roster=tuple(state["roster"]),
            session=bytes(state["session"]),
            dimension=int(state["dimension"]),
            clip=float(state["clip"]),
            bits=int(state["bits"]),
            ring_bits=int(state["ring_bits"]),
            degree=int(state["degree"]),
            threshold=int(state["threshold"]),
            min_inputs=int(state["min_inputs"]),
            rounding=state["rounding"],
        )
