"""The SecAgg+ neighbour graph and the safety refusals of the round parameters."""

from __future__ import annotations

import math

import pytest

from fedswarm.core.errors import ConfigurationError
from fedswarm.privacy.secagg.graph import default_degree, degree_for_dropout, harary_graph, neighbour_graph
from fedswarm.privacy.secagg.params import SecAggParams

ROSTER = [f"bank-{i:02d}" for i in range(20)]


def test_harary_known_small_graphs() -> None:
    # H(4, 6): ring with the two nearest on either side.
    assert harary_graph(6, degree=4)[0] == (1, 2, 4, 5)
    # H(3, 6): ring plus the opposite node.
    assert harary_graph(6, degree=3) == [(1, 3, 5), (0, 2, 4), (1, 3, 5), (0, 2, 4), (1, 3, 5), (0, 2, 4)]
    # degree n - 1 is the complete graph.
    assert harary_graph(5, degree=4)[2] == (0, 1, 3, 4)


@pytest.mark.parametrize(("n", "k"), [(20, 6), (21, 6), (20, 7), (9, 8), (100, 22)])
def test_neighbour_graph_is_regular_symmetric_and_deterministic(n: int, k: int) -> None:
    roster = [f"m{i}" for i in range(n)]
    graph = neighbour_graph(roster, degree=k, seed=b"ledger head 0001")
    assert set(graph) == set(roster)
    for member, neighbours in graph.items():
        assert len(neighbours) == len(set(neighbours)) == k
        assert member not in neighbours
        assert all(member in graph[v] for v in neighbours)
    assert graph == neighbour_graph(roster, degree=k, seed=b"ledger head 0001")


def test_neighbour_graph_depends_on_the_seed() -> None:
    a = neighbour_graph(ROSTER, degree=4, seed=b"seed a")
    b = neighbour_graph(ROSTER, degree=4, seed=b"seed b")
    assert a != b


def test_default_degree_is_logarithmic() -> None:
    assert default_degree(5) == 4  # complete graph for small rosters
    assert default_degree(100) == 22
    assert default_degree(100_000) == 52
    assert default_degree(1_000_000) < 100


def test_degree_for_dropout_meets_its_failure_bound() -> None:
    n, rate = 1000, 0.2
    k = degree_for_dropout(n, dropout_rate=rate, failure_probability=1e-6)
    t = k // 2 + 1

    def lost(k: int, t: int) -> float:  # P(more than k - t of k neighbours drop)
        return sum(math.comb(k, j) * rate**j * (1 - rate) ** (k - j) for j in range(k - t + 1, k + 1))

    assert n * lost(k, t) <= 1e-6 < n * lost(k - 1, (k - 1) // 2 + 1)
    assert [degree_for_dropout(100, dropout_rate=r) for r in (0.0, 0.1, 0.3)] == [22, 31, 99]
    with pytest.raises(ConfigurationError, match="dropout_rate"):
        degree_for_dropout(100, dropout_rate=0.5)


def test_graph_refusals() -> None:
    with pytest.raises(ConfigurationError, match="odd degree"):
        harary_graph(9, degree=3)
    with pytest.raises(ConfigurationError, match="outside"):
        harary_graph(5, degree=5)
    with pytest.raises(ConfigurationError, match="distinct"):
        neighbour_graph(["a", "a", "b"], degree=1, seed=b"s")


def _params(**changes: object) -> SecAggParams:
    base: dict[str, object] = {"session": b"round-7 ledger 00", "dimension": 10, "clip": 1.0}
    base.update(changes)
    return SecAggParams.create(ROSTER, **base)  # type: ignore[arg-type]


def test_params_defaults_and_state_round_trip() -> None:
    params = _params()
    assert params.degree == 16 and params.threshold == 9 and params.min_inputs == 9
    assert params.ring_bits == 16 + 5
    assert params.x_coordinate("bank-00") == 1
    assert len(params.neighbours("bank-03")) == 16
    assert SecAggParams.from_state_dict(params.state_dict()) == params


@pytest.mark.parametrize(("degree", "threshold"), [(6, 3), (6, 2), (8, 4), (19, 9)])
def test_threshold_at_or_below_half_is_refused(degree: int, threshold: int) -> None:
    with pytest.raises(ConfigurationError, match="Shamir threshold at or below half the members"):
        _params(degree=degree, threshold=threshold)


def test_other_unsafe_params_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="overflow"):
        _params(bits=60)
    with pytest.raises(ConfigurationError, match="ring_bits"):
        SecAggParams(**{**_params().__dict__, "ring_bits": 20})
    with pytest.raises(ConfigurationError, match="threshold"):
        _params(degree=6, threshold=7)
    with pytest.raises(ConfigurationError, match="session"):
        _params(session=b"short")
    with pytest.raises(ConfigurationError, match="min_inputs"):
        _params(min_inputs=1)
    with pytest.raises(ConfigurationError, match="odd"):
        SecAggParams.create(ROSTER[:9], session=b"x" * 16, dimension=4, clip=1.0, degree=5, threshold=3)
    with pytest.raises(ConfigurationError, match="at least 3 members"):
        SecAggParams.create(ROSTER[:2], session=b"x" * 16, dimension=4, clip=1.0)
    with pytest.raises(ConfigurationError, match="not in the round's roster"):
        _params().rank("stranger")
