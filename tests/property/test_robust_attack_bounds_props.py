"""Properties of the robust rules under the simulated attacks of fedswarm.sim.attacks.

While the attackers stay under a rule's bound, whatever the attack crafts (ALIE, IPM, sign flipping,
scaling, Gaussian noise, or arbitrary values), every coordinate of the coordinate-wise median and trimmed
mean (as registered in the spec's rule registry) stays within the range of the honest updates; and the
median over group means stays within the range of the groups that hold no attacker.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fedswarm.rounds.robust.groupwise import split_groups
from fedswarm.sim.attacks import ALIE, IPM, GaussianNoise, Scaling, SignFlip
from fedswarm.spec.rules import RULES

SETTINGS = settings(max_examples=50, deadline=None, database=None)
ATTACKS = ["alie", "ipm", "sign_flip", "scaling", "gaussian", "arbitrary"]


def _malicious(kind: str, honest: np.ndarray, f: int, rng: np.random.Generator, scale: float) -> np.ndarray:
    n = honest.shape[0] + f
    if kind == "alie":
        return np.tile(ALIE().craft(honest, n=n, f=f), (f, 1))
    if kind == "ipm":
        return np.tile(IPM(epsilon=scale).craft(honest, n=n, f=f), (f, 1))
    if kind == "sign_flip":
        flip = SignFlip(factor=scale)
        return np.stack([flip.transform(honest[i % len(honest)], member=i, rnd=1, n=n, f=f) for i in range(f)])
    if kind == "scaling":  # the replacement factor n / f: a boosted (here: honest) update
        boost = Scaling(classes=10)
        return np.stack([boost.transform(honest[i % len(honest)], member=i, rnd=1, n=n, f=f) for i in range(f)])
    if kind == "gaussian":
        noise = GaussianNoise(std=scale, seed=3)
        return np.stack([noise.transform(honest[0], member=i, rnd=1, n=n, f=f) for i in range(f)])
    return rng.uniform(-1e6, 1e6, size=(f, honest.shape[1]))


@st.composite
def attacked(draw: st.DrawFn, *, bound: str) -> tuple[np.ndarray, np.ndarray, float]:
    honest_n = draw(st.integers(3, 20))
    d = draw(st.integers(1, 8))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    honest = rng.normal(draw(st.sampled_from([0.0, 2.0])), 1.0, size=(honest_n, d))
    beta = draw(st.sampled_from([0.1, 0.2, 0.3, 0.45]))
    if bound == "median":
        f = draw(st.integers(1, honest_n - 1))  # f < n / 2  <=>  f < honest_n
    else:  # trimmed mean trims floor(beta * n) >= f values at each end
        fs = [f for f in range(1, honest_n) if f <= int(beta * (honest_n + f))]
        f = draw(st.sampled_from(fs)) if fs else 0
    kind = draw(st.sampled_from(ATTACKS))
    bad = _malicious(kind, honest, f, rng, draw(st.sampled_from([0.5, 5.0, 100.0]))) if f else np.zeros((0, d))
    updates = np.concatenate([honest, bad])
    updates = updates[rng.permutation(len(updates))]
    return updates, honest, beta


def _inside(result: np.ndarray, honest: np.ndarray) -> bool:
    tol = 1e-9 * (1 + np.abs(honest).max())
    return bool(np.all(result >= honest.min(axis=0) - tol) and np.all(result <= honest.max(axis=0) + tol))


@SETTINGS
@given(attacked(bound="median"))
def test_median_rule_stays_in_the_honest_range(case: tuple[np.ndarray, np.ndarray, float]) -> None:
    updates, honest, _ = case
    rule = RULES["median"]({})
    assert _inside(rule(updates, weights=np.ones(len(updates))), honest)


@SETTINGS
@given(attacked(bound="trimmed"))
def test_trimmed_mean_rule_stays_in_the_honest_range(case: tuple[np.ndarray, np.ndarray, float]) -> None:
    updates, honest, beta = case
    rule = RULES["trimmed_mean"]({"beta": beta})
    assert _inside(rule(updates, weights=np.ones(len(updates))), honest)


@SETTINGS
@given(st.data())
def test_groupwise_median_stays_in_the_range_of_clean_groups(data: st.DataObject) -> None:
    n = data.draw(st.integers(6, 30))
    groups = data.draw(st.integers(3, min(9, n)))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    # attackers corrupt fewer than half of the groups, whichever groups they land in
    parts = split_groups(range(n), groups=groups, seed=data.draw(st.integers(0, 99)), rnd=1)
    corrupted = data.draw(st.sets(st.integers(0, len(parts) - 1), max_size=(len(parts) - 1) // 2))
    attackers = {parts[g][0] for g in corrupted}
    updates = rng.normal(size=(n, 3))
    for m in attackers:
        updates[m] = rng.uniform(-1e6, 1e6, size=3)
    means = np.stack([updates[p].mean(axis=0) for p in parts])
    clean = np.stack([means[g] for g in range(len(parts)) if g not in corrupted])
    result = RULES["median"]({})(means, weights=np.asarray([len(p) for p in parts], dtype=float))
    assert _inside(result, clean)
