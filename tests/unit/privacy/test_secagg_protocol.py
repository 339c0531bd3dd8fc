"""End-to-end SecAgg+ rounds in memory: the sum, and dropouts at every phase up to and beyond the bound."""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping

import numpy as np
import numpy.typing as npt
import pytest

from fedswarm.core.errors import RoundAborted
from fedswarm.privacy.secagg.aggregator import SecAggAggregator
from fedswarm.privacy.secagg.member import SecAggMember, to_ring
from fedswarm.privacy.secagg.messages import AggregateResult
from fedswarm.privacy.secagg.params import SecAggParams
from fedswarm.privacy.secagg.quantize import quantize

SESSION = b"round 12 / ledger head 3f9a"


def run_round(
    params: SecAggParams,
    inputs: Mapping[str, npt.NDArray[np.float64]],
    *,
    drop: Mapping[int, Collection[str]] | None = None,
    seed: int = 0,
) -> AggregateResult:
    """Run one round; members in ``drop[p]`` send nothing from phase ``p`` on."""
    drop = drop or {}
    rng = np.random.default_rng(seed)
    members = {m: SecAggMember(m, params) for m in params.roster}
    aggregator = SecAggAggregator(params)
    gone: set[str] = set()

    def live(phase: int, inbox: Collection[str]) -> list[str]:
        gone.update(drop.get(phase, ()))
        return [m for m in params.roster if m in inbox and m not in gone]

    keys = aggregator.collect_keys([members[m].advertise_keys() for m in live(0, params.roster)])
    deliveries = aggregator.route_shares([members[m].share_keys(keys[m]) for m in live(1, keys)])
    requests = aggregator.collect_masked(
        [members[m].masked_input(inputs[m], deliveries[m], rng=rng) for m in live(2, deliveries)]
    )
    return aggregator.finish([members[m].unmask(requests[m]) for m in live(3, requests)])


def _inputs(params: SecAggParams, seed: int = 1) -> dict[str, npt.NDArray[np.float64]]:
    rng = np.random.default_rng(seed)
    return {m: rng.normal(0.0, 0.6 * params.clip, size=params.dimension) for m in params.roster}


def _check_sum(params: SecAggParams, inputs: Mapping[str, npt.NDArray[np.float64]], result: AggregateResult) -> None:
    expected = sum(np.clip(inputs[m], -params.clip, params.clip) for m in result.contributors)
    assert result.error_bound == params.error_bound(len(result.contributors))
    assert np.max(np.abs(result.total - expected)) <= result.error_bound
    assert set(result.contributors) | set(result.dropped) == set(params.roster)


@pytest.mark.parametrize(
    ("n", "dimension", "rounding"),
    [
        (5, 1, "deterministic"),
        (5, 33, "stochastic"),
        (12, 7, "stochastic"),
        (30, 64, "deterministic"),
        (30, 5, "stochastic"),
    ],
)
def test_sum_equals_plain_sum_within_quantization_error(n: int, dimension: int, rounding: str) -> None:
    params = SecAggParams.create(
        [f"m{i:02d}" for i in range(n)],
        session=SESSION,
        dimension=dimension,
        clip=1.5,
        bits=14,
        rounding=rounding,  # type: ignore[arg-type]
    )
    inputs = _inputs(params)
    result = run_round(params, inputs)
    assert result.contributors == params.roster and result.dropped == ()
    _check_sum(params, inputs, result)
    if rounding == "deterministic":
        # The exact ring sum of the independently quantized inputs.
        ring = sum(
            to_ring(quantize(inputs[m], clip=1.5, bits=14, rounding="deterministic"), ring_bits=params.ring_bits)
            for m in params.roster
        )
        assert np.array_equal(result.ring_sum, np.asarray(ring) & np.uint64((1 << params.ring_bits) - 1))


# Complete graph on 7 members, threshold 4: every member tolerates 6 - 4 = 2 dropouts.
COMPLETE = SecAggParams.create(
    [f"h{i}" for i in range(7)], session=SESSION, dimension=9, clip=1.0, degree=6, threshold=4
)


@pytest.mark.parametrize("phase", [0, 1, 2, 3])
def test_dropouts_up_to_the_bound_complete(phase: int) -> None:
    inputs = _inputs(COMPLETE)
    result = run_round(COMPLETE, inputs, drop={phase: {"h1", "h5"}})
    # A member that already sent its masked input (phase 3 dropout) is still in the sum.
    assert set(result.dropped) == (set() if phase == 3 else {"h1", "h5"})
    _check_sum(COMPLETE, inputs, result)


@pytest.mark.parametrize("phase", [0, 1, 2, 3])
def test_dropouts_beyond_the_bound_abort_naming_phase_and_survivors(phase: int) -> None:
    labels = ["advertise keys", "share keys", "masked input", "unmask"]
    with pytest.raises(RoundAborted, match=rf"phase {phase} \({labels[phase]}\): 4 of 7 members survived"):
        run_round(COMPLETE, _inputs(COMPLETE), drop={phase: {"h0", "h3", "h6"}})


def test_one_dropout_in_every_phase_completes() -> None:
    params = SecAggParams.create([f"c{i:02d}" for i in range(10)], session=SESSION, dimension=16, clip=2.0)
    inputs = _inputs(params)
    result = run_round(params, inputs, drop={0: {"c00"}, 1: {"c04"}, 2: {"c07"}, 3: {"c09"}})
    assert set(result.dropped) == {"c00", "c04", "c07"}
    _check_sum(params, inputs, result)


# Sparse SecAgg+ graph: 20 members, 6 neighbours each, threshold 4 (tolerates 2 per neighbourhood).
SPARSE = SecAggParams.create(
    [f"s{i:02d}" for i in range(20)], session=SESSION, dimension=8, clip=1.0, degree=6, threshold=4
)


@pytest.mark.parametrize("phase", [0, 1, 2, 3])
def test_sparse_graph_two_neighbours_dropping_complete(phase: int) -> None:
    target = "s07"
    lost = set(SPARSE.neighbours(target)[:2])
    inputs = _inputs(SPARSE)
    result = run_round(SPARSE, inputs, drop={phase: lost})
    assert target in result.contributors
    _check_sum(SPARSE, inputs, result)


@pytest.mark.parametrize("phase", [2, 3])
def test_sparse_graph_three_neighbours_dropping_late_abort(phase: int) -> None:
    lost = set(SPARSE.neighbours("s07")[:3])
    with pytest.raises(RoundAborted, match=rf"phase {phase} .*17 of 20 members survived.*need threshold = 4"):
        run_round(SPARSE, _inputs(SPARSE), drop={phase: lost})


def _threshold_core(params: SecAggParams, alive: set[str]) -> set[str]:
    """Largest subset in which every member keeps at least ``threshold`` neighbours (a graph core)."""
    core = set(alive)
    while weak := {u for u in core if len(set(params.neighbours(u)) & core) < params.threshold}:
        core -= weak
    return core


WIDE = SecAggParams.create(
    [f"w{i:02d}" for i in range(20)], session=SESSION, dimension=8, clip=1.0, degree=12, threshold=7
)


@pytest.mark.parametrize("phase", [0, 1])
def test_early_dropouts_exclude_a_member_left_with_too_few_neighbours(phase: int) -> None:
    # Before any input depends on it, a member whose secrets could not be reconstructed is left out
    # (here: six of its twelve neighbours drop, chosen so that no other member is stranded).
    target = "w07"
    for lost in itertools.combinations(WIDE.neighbours(target), 6):
        alive = set(WIDE.roster) - set(lost)
        if _threshold_core(WIDE, alive) == alive - {target}:
            break
    else:
        pytest.fail("no dropout pattern strands only the target in this graph")
    inputs = _inputs(WIDE)
    result = run_round(WIDE, inputs, drop={phase: set(lost)})
    assert set(result.dropped) == {target, *lost}
    _check_sum(WIDE, inputs, result)


def test_early_dropouts_that_strand_everyone_abort() -> None:
    # Three adjacent losses cascade through the ring-shaped Harary graph until no member is left.
    lost = set(SPARSE.neighbours("s07")[:3])
    assert not _threshold_core(SPARSE, set(SPARSE.roster) - lost)
    with pytest.raises(RoundAborted, match=r"phase 0 \(advertise keys\): 17 of 20 members survived, 0 of them"):
        run_round(SPARSE, _inputs(SPARSE), drop={0: lost})


def test_too_few_inputs_abort_even_when_every_neighbourhood_survives() -> None:
    params = SecAggParams.create(
        [f"q{i}" for i in range(8)], session=SESSION, dimension=3, clip=1.0, degree=7, threshold=4, min_inputs=7
    )
    with pytest.raises(RoundAborted, match=r"phase 2 \(masked input\): 6 of 8 members sent masked input"):
        run_round(params, _inputs(params), drop={2: {"q1", "q2"}})
