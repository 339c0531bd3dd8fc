"""SecAgg+ inside a round: dropouts at every phase up to the bound and beyond, and what the aggregator sees."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from scipy import stats  # type: ignore[import-untyped]

from fedswarm.core.errors import RoundAborted
from fedswarm.privacy.secagg.quantize import dequantize, quantize
from fedswarm.rounds.messages import FitRequest
from fedswarm.rounds.privacy.messages import SecAggKeys, SecAggMasked, SecAggRevealed, SecAggShares
from fedswarm.rounds.privacy.secagg import SecAggCollector
from fedswarm.sim.world import World
from fedswarm.spec.build import build_strategy

sys.path.insert(0, str(Path(__file__).parents[2] / "fixtures"))
from privtasks import FIXTURES, one_round, spec

MEMBERS = 8  # complete graph: degree 7, threshold 5, so up to 2 dropouts per round
SECAGG = {"secure_aggregation": "secagg+", "secagg": {"bits": 24, "rounding": "deterministic"}}


def _spec(**over: Any) -> Any:
    return spec(SECAGG, federation__members=MEMBERS, federation__rounds=1, **over)


def _plain_updates(world: World, s: Any, members: list[int]) -> npt.NDArray[np.float64]:
    strategy = build_strategy(s)
    params = world.task.init_parameters(seed=s.federation.seed)
    gvec = params.flatten()
    rows = []
    for m in members:
        reply = world.runtime.fit(m, FitRequest(params, strategy.fit_config(1, m)), gvec)
        rows.append(reply.update)  # type: ignore[union-attr]
    return np.stack(rows)


def _check_sum(world: World, s: Any, outcome: Any) -> None:
    collector = world.extensions[0].collector()
    assert isinstance(collector, SecAggCollector)
    x0 = world.task.init_parameters(seed=s.federation.seed).flatten()
    count = len(outcome.accepted)
    released = (outcome.parameters.flatten() - x0) * count
    expected = _plain_updates(world, s, outcome.accepted).sum(axis=0)
    bound = collector.last_round["quantization_error_bound"]
    assert bound == pytest.approx(count * 0.5 / ((2**23 - 1) / 5.0))
    assert np.max(np.abs(released - expected)) <= bound + 1e-6  # the model is float32


@pytest.mark.parametrize("kind", ["secagg.advertise", "secagg.share", "secagg.fit", "secagg.unmask"])
def test_round_completes_with_up_to_degree_minus_threshold_dropouts(kind: str) -> None:
    s = _spec()
    world, outcome, _ = one_round(s, {kind: {2, 5}})
    assert world.extensions[0].description["secagg_threshold"] == 5  # type: ignore[attr-defined]
    if kind == "secagg.unmask":  # their masked inputs are in the sum already
        assert outcome.accepted == list(range(MEMBERS))
    else:
        assert outcome.accepted == [0, 1, 3, 4, 6, 7]
        assert set(outcome.dropouts) == {2, 5} and "injected" in outcome.dropouts[2]
    _check_sum(world, s, outcome)


@pytest.mark.parametrize(
    ("kind", "phase"),
    [
        ("secagg.advertise", "phase 0 (advertise keys)"),
        ("secagg.share", "phase 1 (share keys)"),
        ("secagg.fit", "phase 2 (masked input)"),
        ("secagg.unmask", "phase 3 (unmask)"),
    ],
)
def test_round_aborts_cleanly_beyond_the_bound(kind: str, phase: str) -> None:
    with pytest.raises(RoundAborted) as info:
        one_round(_spec(), {kind: {1, 2, 6}})
    text = str(info.value)
    assert "round 1: secure aggregation (SecAgg+) aborted" in text
    assert phase in text and "threshold 5 of 7 neighbours" in text


def test_task_failures_are_phase_two_dropouts_with_their_reason() -> None:
    s = _spec(task__name="privtasks:failing", task__path=FIXTURES, task__options={"fail": "3,4", "run_seed": 3})
    world, outcome, _ = one_round(s)
    assert outcome.accepted == [0, 1, 2, 5, 6, 7]
    assert "injected failure of member 3" in outcome.dropouts[3]
    _check_sum(world, s, outcome)
    s = _spec(task__name="privtasks:failing", task__path=FIXTURES, task__options={"fail": "0,3,4", "run_seed": 3})
    with pytest.raises(RoundAborted, match=r"phase 2 \(masked input\)"):
        one_round(s)


def test_dropouts_in_several_phases_add_up() -> None:
    s = _spec()
    world, outcome, _ = one_round(s, {"secagg.advertise": {0}, "secagg.fit": {7}})
    assert outcome.accepted == [1, 2, 3, 4, 5, 6]
    _check_sum(world, s, outcome)
    with pytest.raises(RoundAborted):
        one_round(s, {"secagg.advertise": {0}, "secagg.fit": {7}, "secagg.unmask": {3}})


def _view(world: World) -> dict[str, npt.NDArray[np.uint64]]:
    collector = world.extensions[0].collector()
    assert isinstance(collector, SecAggCollector)
    return collector.view


def test_the_aggregator_sees_only_masked_vectors() -> None:
    s = spec(
        {"secure_aggregation": "secagg+", "secagg": {"bits": 16, "rounding": "deterministic", "keep_view": True}},
        federation__members=6,
        federation__rounds=1,
        data__dataset="digits",
    )
    world, outcome, backend = one_round(s)
    # every reply the aggregator received is a key, a ciphertext, a masked vector or a share, never an update
    kinds = {kind: {type(r) for r in replies.values()} for kind, replies in backend.seen}
    assert kinds == {
        "secagg.advertise": {SecAggKeys},
        "secagg.share": {SecAggShares},
        "secagg.fit": {SecAggMasked},
        "secagg.unmask": {SecAggRevealed},
    }
    for _, replies in backend.seen:
        for reply in replies.values():
            if isinstance(reply, SecAggRevealed):  # nobody dropped: only self-mask shares are revealed
                assert reply.key_owners == () and len(reply.seed_owners) == 5
    view = _view(world)
    assert set(view) == {f"member-{m:05d}" for m in range(6)}
    ring_bits = world.extensions[0].collector().last_round["ring_bits"]  # type: ignore[union-attr]
    plain = _plain_updates(world, s, list(range(6)))
    x0 = world.task.init_parameters(seed=s.federation.seed).flatten()
    rings = []
    for m in range(6):
        masked = view[f"member-{m:05d}"]
        assert masked.dtype == np.uint64 and int(masked.max()) < 2**ring_bits
        ring = quantize(plain[m], clip=5.0, bits=16, rounding="deterministic").view(np.uint64) & np.uint64(
            2**ring_bits - 1
        )
        rings.append(ring)
        assert np.mean(masked == ring) < 0.01  # the clear quantized update is nowhere to be seen
        # indistinguishable from uniform on the ring (Kolmogorov-Smirnov against U[0, 1))
        assert stats.kstest(masked / 2.0**ring_bits, "uniform").pvalue > 1e-4
        assert abs(np.corrcoef(masked.astype(np.float64), ring.astype(np.float64))[0, 1]) < 0.2
    # ``rings`` are what members would have sent in the clear: their sum is exactly what was released
    clear_sum = dequantize(np.sum(rings, axis=0) & np.uint64(2**ring_bits - 1), clip=5.0, bits=16, ring_bits=ring_bits)
    np.testing.assert_allclose((outcome.parameters.flatten() - x0) * 6, clear_sum, rtol=0, atol=1e-6)  # float32 model
    # a second round with the same update but fresh keys and seeds: a completely different masked vector
    world2, _, _ = one_round(s)
    view2 = _view(world2)
    for m in range(6):
        name = f"member-{m:05d}"
        assert np.mean(view[name] == view2[name]) < 0.01
