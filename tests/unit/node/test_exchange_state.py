"""Extensions' server state travels with commits: it round-trips through canonical JSON, a node that loads it
accounts and scores exactly as the node that saved it, and records carry annotations, the stop and the summary."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from fedswarm.codec import canonical
from fedswarm.core.errors import ConfigurationError
from fedswarm.core.parameters import Parameters
from fedswarm.core.task import DataInfo
from fedswarm.node.records import extension_summary, outcome_from_record, outcome_record, stop_reason
from fedswarm.rounds.coordinator import RoundOutcome
from fedswarm.rounds.extension import RunExtension, extension_states, load_extension_states
from fedswarm.rounds.robust.detection import Detector, DetectorSettings
from fedswarm.spec.extensions import build_extensions
from fedswarm.spec.schema import Spec, parse_spec
from fedswarm.transport._generated.fedswarm.v1 import federation_pb2 as pb

INFO = DataInfo(num_features=4, num_classes=2, feature_names=("a", "b", "c", "d"))
MODEL = Parameters({"w": np.zeros(3)})


def _spec(privacy: dict[str, Any], *, members: int = 5, rounds: int = 4) -> Spec:
    return parse_spec(
        {
            "federation": {"name": "state", "members": members, "rounds": rounds},
            "data": {"dataset": "breast_cancer"},
            "strategy": {"name": "fedavg", "min_members": 2},
            "privacy": privacy,
        }
    )


def _outcome(rnd: int, members: list[int], updates: np.ndarray[Any, Any] | None = None) -> RoundOutcome:
    u = np.zeros((0, 3)) if updates is None else updates
    return RoundOutcome(
        round=rnd, selected=np.asarray(members, dtype=np.int64), accepted=members, dropouts={}, rejected={},
        parameters=MODEL, updates=u, weights=np.ones(len(u)), train_metrics={}, bytes_up=0, bytes_down=0,
        central=None, members_eval=None, seconds=0.0,
    )  # fmt: skip


def _through_a_commit(extensions: list[RunExtension]) -> Any:
    return canonical.decode(canonical.encode(extension_states(extensions)))


ADAPTIVE = {
    "dp": "central", "noise_multiplier": 1.0, "clip": 1.0, "delta": 1e-3, "budget_epsilon": 6.0,
    "adaptive_clip": {"target_quantile": 0.5, "count_noise_multiplier": 3.0},
}  # fmt: skip


def test_the_next_leader_accounts_and_clips_as_the_previous_one_would_have() -> None:
    spec = _spec(ADAPTIVE)
    first = build_extensions(spec, INFO, 5)
    privacy = first[0]
    for rnd in (1, 2):
        privacy.release.adaptive.observe_noised_count(1.0, expected_count=5)  # type: ignore[attr-defined]  # the collect
        privacy.after_round(_outcome(rnd, [0, 1, 2, 3, 4]), model=MODEL)
    state = _through_a_commit(first)
    assert set(state) == {"privacy", "robustness"} and state["privacy"]["budget"]["rounds"] == 2

    second = build_extensions(spec, INFO, 5)
    load_extension_states(second, state)
    assert second[0].summary() == privacy.summary()
    assert second[0].release.clip == privacy.release.clip != 1.0  # type: ignore[attr-defined]
    spent = privacy.summary()["privacy"]["epsilon"]
    a, b = _outcome(3, [0, 1, 2, 3, 4]), _outcome(3, [0, 1, 2, 3, 4])
    assert privacy.after_round(a, model=MODEL) == second[0].after_round(b, model=MODEL)
    assert a.annotations == b.annotations
    assert a.annotations["privacy"]["clip"] == second[0].summary()["privacy"]["final_clip"]
    assert a.annotations["privacy"]["epsilon"] > spent


def test_a_restored_budget_stops_the_run_at_the_same_round() -> None:
    spec = _spec({"dp": "central", "noise_multiplier": 1.0, "clip": 1.0, "delta": 1e-3, "budget_epsilon": 5.5},
                 members=3, rounds=3)  # fmt: skip
    leader = build_extensions(spec, INFO, 3)
    assert leader[0].after_round(_outcome(1, [0, 1, 2]), model=MODEL) is None
    follower = build_extensions(spec, INFO, 3)
    load_extension_states(follower, _through_a_commit(leader))
    reason = follower[0].after_round(_outcome(2, [0, 1, 2]), model=MODEL)
    assert reason is not None and reason.startswith("privacy budget exhausted: round 3")


def test_state_of_another_setup_is_refused() -> None:
    central = build_extensions(_spec({"dp": "central", "noise_multiplier": 1.0, "clip": 1.0, "delta": 1e-3}), INFO, 5)
    other = build_extensions(_spec({"dp": "central", "noise_multiplier": 2.0, "clip": 1.0, "delta": 1e-3}), INFO, 5)
    with pytest.raises(ConfigurationError, match="noise_multiplier"):
        load_extension_states(other, _through_a_commit(central))
    with pytest.raises(ConfigurationError, match="does not have"):
        load_extension_states(central, {"ledger": {}})
    clip = build_extensions(_spec({"dp": "central", "noise_multiplier": 1.0, "clip": 2.0, "delta": 1e-3}), INFO, 5)
    with pytest.raises(ConfigurationError, match="clip"):
        load_extension_states(clip, _through_a_commit(central))


def test_reputation_survives_a_change_of_leader() -> None:
    rng = np.random.default_rng(3)
    rounds = [rng.normal(size=(5, 8)) for _ in range(3)]
    for u in rounds:
        u[4] *= 40.0  # member 4 scales its update
    one = Detector(DetectorSettings(), member_name=lambda m: f"member-{m:05d}")
    for r, u in enumerate(rounds[:2], start=1):
        one.score_round(r, [0, 1, 2, 3, 4], u)
    two = Detector(DetectorSettings(), member_name=lambda m: f"member-{m:05d}")
    two.load_state_dict(canonical.decode(canonical.encode(one.state_dict())))
    assert two.score_round(3, [0, 1, 2, 3, 4], rounds[2]) == one.score_round(3, [0, 1, 2, 3, 4], rounds[2])
    assert two.summary() == one.summary() and two.flagged() == ["member-00004"]
    with pytest.raises(ConfigurationError, match="detection state"):
        two.load_state_dict({"reputation": {"x": 1.0}})


def test_records_carry_annotations_the_stop_and_the_run_summary() -> None:
    outcome = _outcome(2, [0, 1])
    outcome.annotations["privacy"] = {"epsilon": 1.5, "delta": 1e-3}
    record = outcome_record(outcome, leader="member-00000", model_digest="ab" * 32, started_ms=0)
    assert outcome_from_record(record, MODEL).annotations == {"privacy": {"epsilon": 1.5, "delta": 1e-3}}
    record["stopped_early"] = "privacy budget exhausted"
    record["extensions"] = {"privacy": {"epsilon": 1.5}, "flagged": []}
    assert extension_summary([{"round": 1}, record]) == {
        "privacy": {"epsilon": 1.5}, "flagged": [], "stopped_early": "privacy budget exhausted"
    }  # fmt: skip
    assert extension_summary([]) == {}
    assert stop_reason(pb.Commit(record_json=json.dumps(record))) == "privacy budget exhausted"
    assert stop_reason(pb.Commit(record_json=json.dumps({"round": 3}))) is None
    assert stop_reason(pb.Commit()) is None
