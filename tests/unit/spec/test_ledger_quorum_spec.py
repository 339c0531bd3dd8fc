"""``ledger.quorum`` in the spec: a fraction string "N/D", strictly between 0 and 1, named in every refusal."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedswarm.core.errors import ConfigurationError, SpecError
from fedswarm.core.parameters import Parameters
from fedswarm.ledger.recorder import LedgerRecorder
from fedswarm.spec.schema import Spec, apply_overrides, parse_spec

BASE: dict[str, Any] = {"federation": {"members": 4}, "data": {"dataset": "digits"}}


@dataclass(frozen=True)
class Settings:
    """A ``[ledger]`` section the spec would refuse (the recorder must refuse it too)."""

    quorum: tuple[int, int]
    retain_updates: bool = True
    checkpoint_every: int = 1


def with_quorum(value: object) -> Spec:
    return parse_spec({**BASE, "ledger": {"quorum": value}})


def test_default_is_two_thirds_and_written_in_the_spec_dict() -> None:
    spec = parse_spec(BASE)
    assert spec.ledger.quorum == (2, 3)
    assert spec.to_dict()["ledger"]["quorum"] == "2/3"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1/2", (1, 2)), ("3/4", (3, 4)), (" 1 / 3 ", (1, 3)), ("4/6", (4, 6)), ("999999/1000000", (999_999, 1_000_000))],
)
def test_good_fractions_parse_as_written(text: str, expected: tuple[int, int]) -> None:
    spec = with_quorum(text)
    assert spec.ledger.quorum == expected
    assert spec.to_dict()["ledger"]["quorum"] == f"{expected[0]}/{expected[1]}"
    assert parse_spec(spec.to_dict()).ledger.quorum == expected  # the TOML form round-trips


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("0/3", "must be more than 0"),
        ("0/1", "must be more than 0"),
        ("1/1", "must be less than 1"),
        ("3/3", "must be less than 1"),
        ("5/4", "must be less than 1"),
        ("1/0", "denominator"),
        ("1/2000000", "denominator"),
        ("2:3", 'not a fraction "N/D"'),
        ("2/3/4", 'not a fraction "N/D"'),
        ("-1/3", 'not a fraction "N/D"'),
        ("0.5/1", 'not a fraction "N/D"'),
        ("two thirds", 'not a fraction "N/D"'),
        ("", 'not a fraction "N/D"'),
        (0.5, "expected a fraction as a string"),
        (1, "expected a fraction as a string"),
        ([2, 3], "expected a fraction as a string"),
        (True, "expected a fraction as a string"),
    ],
)
def test_bad_values_are_refused_naming_the_field(value: object, reason: str) -> None:
    with pytest.raises(SpecError) as caught:
        with_quorum(value)
    assert str(caught.value).startswith("ledger.quorum: ")
    assert reason in str(caught.value)


def test_the_command_line_override_sets_it() -> None:
    raw = apply_overrides(BASE, ["ledger.quorum=1/2"])
    assert raw["ledger"]["quorum"] == "1/2"
    assert parse_spec(raw).ledger.quorum == (1, 2)
    with pytest.raises(SpecError, match=r"^ledger\.quorum: .*less than 1"):
        parse_spec(apply_overrides(BASE, ["ledger.quorum=3/2"]))


def test_the_recorder_takes_the_quorum_of_the_spec_and_refuses_one_outside_0_1(tmp_path: Path) -> None:
    schema = Parameters({"w": np.zeros(2)}).schema
    LedgerRecorder(tmp_path / "ok", spec=with_quorum("1/2").ledger, schema=schema)  # a validated spec is taken
    for bad in ((0, 2), (2, 2), (3, 2)):
        with pytest.raises(ConfigurationError, match=r"ledger\.quorum"):
            LedgerRecorder(tmp_path / f"bad{bad[0]}", spec=Settings(bad), schema=schema)
