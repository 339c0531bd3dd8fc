"""The sparse neighbour graph of SecAgg+ (Bell, Bonawitz, Gascón, Lepoint and Raykova, 2020,
"Secure Single-Server Aggregation with (Poly)Logarithmic Overhead").

Instead of every member sharing secrets and masks with every other member (Bonawitz et al., 2017), each
member does so only with its ``k`` neighbours in a ``k``-regular graph, ``k = O(log n)``. We use a
Harary graph on a random arrangement of the members: members are placed on a ring in an order drawn
from a shared seed with the AES-CTR PRG, each is joined to the ``k // 2`` nearest positions on either
side and, when ``k`` is odd, to the opposite position. Every node then has degree exactly ``k``
(``k * n`` must be even; ``k = n - 1`` is the complete graph of the original protocol).

The seed must be one that no single party controls when the graph is fixed (for example a digest of
the ledger's latest checkpoint); all parties derive the same graph from it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from fedswarm.core.errors import ConfigurationError
from fedswarm.crypto.kdf import hkdf_sha256
from fedswarm.crypto.prg import prg_uint64

__all__ = ["default_degree", "degree_for_dropout", "harary_graph", "neighbour_graph"]


def default_degree(num_members: int) -> int:
    """A logarithmic neighbourhood size: the smallest even ``k >= 3 * ceil(log2 n)``, at most ``n - 1``.

    Bell et al. (2020) show that ``k = O(log n)`` suffices; the constant 3 is a practical choice that
    leaves room for a threshold above ``k / 2`` and a few dropouts per neighbourhood. Use an explicit
    degree when the expected dropout rate or corruption fraction calls for more.
    """
    if num_members < 2:
        raise ConfigurationError(f"num_members: secure aggregation needs at least 2 members, got {num_members}")
    k = 3 * math.ceil(math.log2(num_members))
    k += k % 2
    return min(k, num_members - 1)


def _tail_below(k: int, t: int, survive: float) -> float:
    """``P(Binomial(k, survive) < t)``."""
    return sum(math.comb(k, i) * survive**i * (1.0 - survive) ** (k - i) for i in range(t))


def degree_for_dropout(num_members: int, *, dropout_rate: float, failure_probability: float = 1e-6) -> int:
    """Smallest degree that survives independent dropouts with the most tolerant safe threshold.

    With threshold ``k // 2 + 1`` a member's secrets are lost when more than ``k - k // 2 - 1`` of its
    ``k`` neighbours drop. This returns the smallest ``k`` (at least :func:`default_degree`, at most
    ``n - 1``, and with ``k * n`` even) for which the union bound
    ``n * P(Binomial(k, 1 - dropout_rate) < k // 2 + 1)`` is at most ``failure_probability``, in the
    spirit of the parameter analysis of Bell et al. (2020). It grows like ``log(n / failure_probability)``.
    A threshold just above ``k / 2`` also means that the aggregator together with ``k // 2 + 1`` of a
    member's neighbours can unmask it; raise the degree when collusion is a concern.
    """
    if not 0.0 <= dropout_rate < 0.5:
        raise ConfigurationError(f"dropout_rate: {dropout_rate} is outside [0, 0.5); a threshold above half fails")
    if not 0.0 < failure_probability < 1.0:
        raise ConfigurationError(f"failure_probability: {failure_probability} is outside (0, 1)")
    n = num_members
    k = default_degree(n)
    while k < n - 1 and n * _tail_below(k, k // 2 + 1, 1.0 - dropout_rate) > failure_probability:
        k += 1
    if k % 2 and n % 2:
        k = min(k + 1, n - 1)
    return k


def harary_graph(num_nodes: int, *, degree: int) -> list[tuple[int, ...]]:
    """Neighbour lists of the ``degree``-regular Harary graph on positions ``0 .. num_nodes - 1``.

    Raises
    ------
    ConfigurationError
        If ``degree`` is outside ``1 .. num_nodes - 1`` or ``degree * num_nodes`` is odd (no regular
        graph exists).
    """
    if not 1 <= degree <= num_nodes - 1:
        raise ConfigurationError(f"graph degree: {degree} is outside 1..{num_nodes - 1} for {num_nodes} members")
    if degree % 2 and num_nodes % 2:
        raise ConfigurationError(
            f"graph degree: no {degree}-regular graph on {num_nodes} members (odd degree, odd count)"
        )
    half = degree // 2
    neighbours = []
    for i in range(num_nodes):
        adjacent = {(i + d) % num_nodes for d in range(1, half + 1)}
        adjacent |= {(i - d) % num_nodes for d in range(1, half + 1)}
        if degree % 2:
            adjacent.add((i + num_nodes // 2) % num_nodes)
        neighbours.append(tuple(sorted(adjacent)))
    return neighbours


def neighbour_graph(roster: Sequence[str], *, degree: int, seed: bytes) -> Mapping[str, tuple[str, ...]]:
    """Deterministic SecAgg+ neighbour graph over member ids.

    Parameters
    ----------
    roster
        Distinct member ids.
    degree
        Neighbours per member.
    seed
        Shared public randomness; the same seed and roster always give the same graph.

    Returns
    -------
    Mapping
        Each member's neighbours, sorted by roster order.
    """
    members = list(roster)
    if len(set(members)) != len(members):
        raise ConfigurationError("roster: member ids are not distinct")
    keys = prg_uint64(hkdf_sha256(seed, info=b"fedswarm/secagg/v1/graph"), len(members))
    order = np.argsort(keys, kind="stable")
    placed = [members[int(i)] for i in order]
    rank = {member: i for i, member in enumerate(members)}
    adjacency = harary_graph(len(members), degree=degree)
    return {
        placed[p]: tuple(sorted((placed[q] for q in adjacency[p]), key=rank.__getitem__)) for p in range(len(placed))
    }
