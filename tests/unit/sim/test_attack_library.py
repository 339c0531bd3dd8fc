"""Each simulated attack changes what it should, relative to the same round without the attack."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import fedswarm.sim.attacks  # noqa: F401  (registers the attack library)
from fedswarm.core.data import Arrays
from fedswarm.core.errors import ConfigurationError, SpecError
from fedswarm.core.parameters import Parameters
from fedswarm.core.task import DataInfo
from fedswarm.rounds.coordinator import RoundOutcome
from fedswarm.rounds.observer import RunStart
from fedswarm.sim.attacks import (
    AttackReport,
    Backdoor,
    LabelFlip,
    Scaling,
    alie_z,
    build_attack,
    build_attack_part,
    choose_attackers,
)
from fedswarm.sim.attacks.scaling import replacement_factor
from fedswarm.sim.engine import run_simulation
from fedswarm.spec import robust_extension
from fedswarm.spec.robustness import AttackSpec
from fedswarm.spec.schema import parse_spec


class Capture:
    """A run observer keeping every round's outcome."""

    def __init__(self) -> None:
        self.outcomes: list[RoundOutcome] = []

    def on_start(self, start: RunStart) -> None:
        pass

    def on_round(self, outcome: RoundOutcome, *, model: Parameters, model_digest: str) -> None:
        self.outcomes.append(outcome)

    def on_finish(self, summary: Mapping[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


ATTACKERS = [1, 4]


def _raw(attack: dict[str, Any] | None = None, *, rounds: int = 1, members: int = 8, **extra: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "federation": {"name": "a", "members": members, "rounds": rounds, "seed": 5},
        "data": {"dataset": "digits", "partition": "iid"},
        "training": {"epochs": 1, "batch_size": 16, "learning_rate": 0.1},
        "strategy": {"name": "fedavg", "min_members": 2},
        "baselines": {"local_only": False, "centralized": False},
        "evaluation": {"members": "none"},
    }
    if attack is not None:
        raw["attack"] = {"members": ATTACKERS, **attack}
    raw.update(extra)
    return raw


def _rows(raw: dict[str, Any]) -> tuple[dict[int, np.ndarray], dict[int, float], RoundOutcome]:
    cap = Capture()
    run_simulation(parse_spec(raw), write_outputs=False, observers=[cap])
    out = cap.outcomes[-1]
    return (
        {m: out.updates[i] for i, m in enumerate(out.accepted)},
        dict(zip(out.accepted, out.weights, strict=True)),
        out,
    )


@pytest.fixture(scope="module")
def honest() -> dict[int, np.ndarray]:
    return _rows(_raw())[0]


def test_sign_flip_negates_and_boosting_an_honest_update_scales_it(honest: dict[int, np.ndarray]) -> None:
    flipped, _, _ = _rows(_raw({"kind": "sign_flip"}))
    scaled, _, _ = _rows(_raw({"kind": "scaling", "parameters": {"factor": 3.0, "poison": "none"}}))
    for m in honest:
        if m in ATTACKERS:
            np.testing.assert_array_equal(flipped[m], -honest[m])
            np.testing.assert_array_equal(scaled[m], 3.0 * honest[m])
        else:
            np.testing.assert_array_equal(flipped[m], honest[m])
            np.testing.assert_array_equal(scaled[m], honest[m])


def test_model_replacement_scales_a_label_flipped_update_by_n_over_f_eta(honest: dict[int, np.ndarray]) -> None:
    poisoned, _, _ = _rows(_raw({"kind": "label_flip"}))  # the attackers' updates trained on y -> 9 - y
    replaced, _, _ = _rows(_raw({"kind": "scaling"}))  # 8 members, 2 attackers, server lr 1: gamma = 4
    raw = _raw({"kind": "scaling"})
    raw["strategy"]["server_lr"] = 2.0  # gamma = 8 / (2 * 2) = 2 (round 1 starts from the same model)
    half, _, _ = _rows(raw)
    fixed, _, _ = _rows(_raw({"kind": "scaling", "parameters": {"factor": 10.0}}))
    for m in honest:
        if m in ATTACKERS:
            assert not np.array_equal(poisoned[m], honest[m])
            np.testing.assert_array_equal(replaced[m], 4.0 * poisoned[m])
            np.testing.assert_array_equal(half[m], 2.0 * poisoned[m])
            np.testing.assert_array_equal(fixed[m], 10.0 * poisoned[m])
        else:
            for rows in (replaced, half, fixed):
                np.testing.assert_array_equal(rows[m], honest[m])


def test_replacement_factor_and_poisoned_data_by_hand() -> None:
    assert replacement_factor(25, 5, server_lr=1.0) == 5.0
    assert replacement_factor(25, 1, server_lr=1.0) == 25.0  # one attacker: Bagdasaryan et al.'s n / eta
    assert replacement_factor(10, 2, server_lr=0.5) == 10.0
    attack = Scaling(classes=10, server_lr=0.5)
    update = np.array([1.0, -2.0, 0.25])
    np.testing.assert_array_equal(attack.transform(update, member=0, rnd=1, n=10, f=2), [10.0, -20.0, 2.5])
    np.testing.assert_array_equal(
        Scaling(classes=10, factor=3.0).transform(update, member=0, rnd=1, n=10, f=2), [3.0, -6.0, 0.75]
    )
    train = Arrays(np.arange(6.0).reshape(3, 2), np.array([0, 4, 9]))
    flipped = attack.poison(7, train)
    assert flipped.y.tolist() == [9, 5, 0] and (flipped.x == train.x).all()
    kept = Scaling(classes=10, poison="none").poison(7, train)
    assert kept.y.tolist() == [0, 4, 9]
    assert attack.describe() == {"factor": "n / (f * 0.5)", "poison": "label_flip"}


def test_model_replacement_collapses_the_mean_and_norm_bounding_contains_it() -> None:
    raw = _raw({"kind": "scaling"}, rounds=6, members=10)
    raw["attack"]["members"] = [1, 4]  # gamma = 10 / 2 = 5
    raw["robustness"] = {"detection": {"enabled": False}}
    clean = run_simulation(parse_spec(_raw(rounds=6, members=10)), write_outputs=False)
    attacked = run_simulation(parse_spec(raw), write_outputs=False)
    raw["strategy"]["rule"] = {"name": "clipped_mean", "options": {"max_norm": 0.5}}
    bounded = run_simulation(parse_spec(raw), write_outputs=False)
    clean_acc = clean.summary["final"]["accuracy"]
    assert attacked.summary["final"]["accuracy"] < clean_acc - 0.3
    assert bounded.summary["final"]["accuracy"] > clean_acc - 0.1


def test_free_rider_sends_a_zero_update_and_claims_its_examples(honest: dict[int, np.ndarray]) -> None:
    rows, weights, _ = _rows(_raw({"kind": "free_ride"}))
    _, honest_weights, _ = _rows(_raw())
    for m in ATTACKERS:
        assert not rows[m].any() and honest[m].any()
        assert weights[m] == honest_weights[m] > 0


def test_gaussian_noise_replaces_the_update(honest: dict[int, np.ndarray]) -> None:
    rows, _, _ = _rows(_raw({"kind": "gaussian", "parameters": {"std": 2.0}}))
    for m in ATTACKERS:
        assert abs(rows[m].mean()) < 0.3 and 1.8 < rows[m].std() < 2.2  # d = 650 draws
    assert not np.array_equal(rows[ATTACKERS[0]], rows[ATTACKERS[1]])


def test_alie_sends_mean_minus_z_std_of_the_honest_updates(honest: dict[int, np.ndarray]) -> None:
    rows, _, _ = _rows(_raw({"kind": "alie"}))
    good = np.stack([honest[m] for m in sorted(honest) if m not in ATTACKERS])
    z = alie_z(8, 2)  # s = floor(5) - 2 = 3, z = Phi^-1(5 / 8)
    assert z == pytest.approx(0.3186393639643752)
    for m in ATTACKERS:
        np.testing.assert_allclose(rows[m], good.mean(axis=0) - z * good.std(axis=0), rtol=1e-12, atol=1e-15)
    assert alie_z(25, 5) == pytest.approx(0.4676987991145082)  # s = 8, Phi^-1(17 / 25)
    fixed, _, _ = _rows(_raw({"kind": "alie", "parameters": {"z": 1.5}}))
    np.testing.assert_allclose(fixed[1], good.mean(axis=0) - 1.5 * good.std(axis=0), rtol=1e-12, atol=1e-15)


def test_ipm_sends_minus_epsilon_times_the_honest_mean(honest: dict[int, np.ndarray]) -> None:
    rows, _, _ = _rows(_raw({"kind": "ipm", "parameters": {"epsilon": 0.5}}))
    good = np.stack([honest[m] for m in sorted(honest) if m not in ATTACKERS])
    for m in ATTACKERS:
        np.testing.assert_allclose(rows[m], -0.5 * good.mean(axis=0), rtol=1e-12, atol=1e-15)


def test_label_flipping_trains_on_flipped_labels(honest: dict[int, np.ndarray]) -> None:
    y = np.array([0, 3, 9, 7, 7])
    assert LabelFlip(classes=10).flip(y).tolist() == [9, 6, 0, 2, 2]
    assert LabelFlip(classes=10, source=7, target=1).flip(y).tolist() == [0, 3, 9, 1, 1]
    rows, _, _ = _rows(_raw({"kind": "label_flip"}))
    for m in honest:
        assert np.array_equal(rows[m], honest[m]) == (m not in ATTACKERS)
    # label flipping moves the attacker's update away from the honest direction
    cos = rows[1] @ honest[1] / np.linalg.norm(rows[1]) / np.linalg.norm(honest[1])
    assert cos < 0.5


def test_absent_members_are_selected_but_send_nothing() -> None:
    _, _, out = _rows(_raw({"kind": "absent"}))
    assert set(ATTACKERS) <= set(int(m) for m in out.selected)
    assert set(out.dropouts) == set(ATTACKERS) and "absent" in out.dropouts[1]
    assert set(out.accepted) == set(range(8)) - set(ATTACKERS)


def test_attackers_behave_honestly_before_from_round() -> None:
    cap_a, cap_b = Capture(), Capture()
    run_simulation(parse_spec(_raw(rounds=3)), write_outputs=False, observers=[cap_a])
    attack = _raw({"kind": "sign_flip", "from_round": 3}, rounds=3)
    res = run_simulation(parse_spec(attack), write_outputs=False, observers=[cap_b])
    for r in (0, 1):
        np.testing.assert_array_equal(cap_a.outcomes[r].updates, cap_b.outcomes[r].updates)
    assert not np.array_equal(cap_a.outcomes[2].updates, cap_b.outcomes[2].updates)
    assert [h["attackers"] for h in res.history] == [0, 0, 2]


def test_backdoor_poisons_rows_and_raises_the_attack_success_rate(tmp_path: Path) -> None:
    bd = Backdoor(target=0, features=(60, 61, 62, 63), value=1.0, fraction=0.5, seed=1)
    train = Arrays(np.zeros((10, 64), dtype=np.float32), np.arange(10) % 10)
    poisoned = bd.poison(3, train)
    assert len(poisoned) == 15 and poisoned.y[10:].tolist() == [0] * 5
    assert (poisoned.x[10:, 60:] == 1.0).all() and (poisoned.x[10:, :60] == 0.0).all()
    assert (poisoned.x[:10] == train.x).all()
    triggered = bd.triggered_holdout(Arrays(np.zeros((4, 64), dtype=np.float32), np.array([0, 1, 2, 0])))
    assert len(triggered) == 2 and (triggered.y == 0).all()

    attack = {"kind": "backdoor", "members": [0, 1, 2, 3], "parameters": {"target": 0, "fraction": 1.0}}
    raw = _raw(rounds=6, members=10)
    raw["attack"] = attack
    raw["robustness"] = {"detection": {"enabled": False}}
    res = run_simulation(parse_spec(raw), out_dir=tmp_path / "bd")
    asr = [h["attack_success_rate"] for h in res.history]
    assert len(asr) == 6 and res.summary["attack"]["attack_success_rate"] == asr[-1]
    # the same trigger on the clean run's final model (accuracy stays comparable)
    clean = run_simulation(parse_spec(_raw(rounds=6, members=10)), write_outputs=False)
    report = build_attack_part(parse_spec(raw), DataInfo(64, 10), 10).hook
    assert isinstance(report, AttackReport)
    clean_asr = report.attack_success_rate(clean.final)
    assert clean_asr is not None and asr[-1] > clean_asr + 0.3
    lines = [json.loads(x) for x in (tmp_path / "bd" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["attack_success_rate"] == asr[-1]


def test_attackers_are_chosen_by_seed() -> None:
    spec = AttackSpec(kind="sign_flip", members=5)
    a = choose_attackers(spec, members=25, seed=1)
    assert a == choose_attackers(spec, members=25, seed=1) and len(set(a)) == 5 and a == tuple(sorted(a))
    assert a != choose_attackers(spec, members=25, seed=2)
    assert len(choose_attackers(AttackSpec(kind="ipm", members=0.2), members=25, seed=1)) == 5
    assert choose_attackers(AttackSpec(kind="ipm", members=[7, 2]), members=25, seed=1) == (2, 7)
    with pytest.raises(SpecError, match="attack.members"):
        choose_attackers(AttackSpec(kind="ipm", members=[30]), members=25, seed=1)
    with pytest.raises(SpecError, match="attack.members"):
        choose_attackers(AttackSpec(kind="ipm", members=30), members=25, seed=1)


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ({"kind": "sign_flip", "members": 1, "parameters": {"scale": 2.0}}, "attack.parameters.scale"),
        ({"kind": "scaling", "members": 1, "parameters": {"factor": -1.0}}, "attack.parameters.factor"),
        ({"kind": "scaling", "members": 1, "parameters": {"poison": "random"}}, "attack.parameters.poison"),
        ({"kind": "scaling", "members": 1, "parameters": {"poison": 1}}, "attack.parameters.poison"),
        ({"kind": "label_flip", "members": 1, "parameters": {"source": 3}}, "attack.parameters.target"),
        ({"kind": "label_flip", "members": 1, "parameters": {"source": 3, "target": 10}}, "attack.parameters.target"),
        ({"kind": "backdoor", "members": 1, "parameters": {"features": [64]}}, "attack.parameters.features"),
        ({"kind": "backdoor", "members": 1, "parameters": {"fraction": 0.0}}, "attack.parameters.fraction"),
        ({"kind": "free_ride", "members": 1, "parameters": {"x": 1}}, "attack.parameters.x"),
    ],
)
def test_bad_parameters_name_the_key(raw: dict[str, Any], path: str) -> None:
    with pytest.raises(SpecError) as err:
        build_attack(AttackSpec.model_validate(raw), DataInfo(64, 10), seed=0, data_max=lambda: 1.0)
    assert err.value.path == path


@pytest.mark.parametrize("members", [0, 1.0, [], [1, 1], True])
def test_bad_attacker_sets_are_refused(members: Any) -> None:
    with pytest.raises(SpecError, match="attack"):
        parse_spec(_raw({"kind": "ipm", "members": members}) | {"attack": {"kind": "ipm", "members": members}})


def test_a_process_without_the_attack_library_refuses_attack(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(robust_extension, "_ATTACK_BUILDERS", [])
    with pytest.raises(ConfigurationError, match="simulation-only"):
        run_simulation(parse_spec(_raw({"kind": "sign_flip"})), write_outputs=False)
