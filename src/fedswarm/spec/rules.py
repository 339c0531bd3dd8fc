"""The registry of aggregation rules a spec can name in ``[strategy.rule]``."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from fedswarm.core.errors import SpecError
from fedswarm.core.task import Scalar
from fedswarm.strategy.base import AggregationRule, MeanRule

__all__ = ["RULES"]


def _mean_rule(options: Mapping[str, Scalar]) -> AggregationRule:
    unknown = set(options) - {"weighted"}
    if unknown:
        raise SpecError(f"strategy.rule.options.{sorted(unknown)[0]}", "unknown option for rule 'mean'")
    return MeanRule(weighted=bool(options.get("weighted", True)))


RULES: dict[str, Callable[[Mapping[str, Scalar]], AggregationRule]] = {"mean": _mean_rule}
