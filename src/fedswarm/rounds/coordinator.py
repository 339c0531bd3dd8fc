"""The coordinator side of a round, written as a generator of exchanges.

``Coordinator.run_round`` yields :class:`~fedswarm.rounds.messages.Exchange` objects and receives the
members' replies; it never does I/O itself. Whoever drives it decides how messages travel: the
simulation engine calls member runtimes in-process (or in worker processes, or on Ray), a network node
sends them over gRPC. The round is the same code in every case, which is what makes simulation results
carry over to real deployments.

A round: select members → ``fit`` exchange (global model and config down, updates up) → screen each update
(non-finite values and server stages' checks reject it with a reason) → aggregate with the strategy →
server stages on the aggregate → ``evaluate`` exchange on members' local test splits → outcome.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from fedswarm.codec.tensors import encoded_size
from fedswarm.core.errors import ConfigurationError, RoundAborted
from fedswarm.core.parameters import Parameters, Schema
from fedswarm.core.task import EvalResult
from fedswarm.rounds.collect import Collector, PlainCollector
from fedswarm.rounds.messages import EvaluateReply, EvaluateRequest, Exchange, FitRequest
from fedswarm.rounds.stages import ServerContext, ServerStage
from fedswarm.strategy.base import Strategy

__all__ = ["Coordinator", "MemberEvaluation", "RoundGenerator", "RoundOutcome", "worst_fraction_mean"]

EvaluateMembers = Literal["all", "sampled", "none"]


@dataclass(slots=True)
class MemberEvaluation:
    """The global model on members' local test splits: mean, worst 10% and per-member accuracy."""

    members: int
    accuracy_mean: float
    accuracy_worst10: float
    loss_mean: float
    per_member: dict[int, float] = field(default_factory=dict)


@dataclass(slots=True)
class RoundOutcome:
    round: int
    selected: npt.NDArray[np.int64]
    accepted: list[int]
    dropouts: dict[int, str]
    rejected: dict[int, str]
    parameters: Parameters
    updates: npt.NDArray[np.float64]
    weights: npt.NDArray[np.float64]
    train_metrics: dict[str, float]
    bytes_up: int
    bytes_down: int
    central: EvalResult | None
    members_eval: MemberEvaluation | None
    seconds: float
    annotations: dict[str, Any] = field(default_factory=dict)


RoundGenerator = Generator[Exchange[Any], Mapping[int, Any], RoundOutcome]


def worst_fraction_mean(values: npt.NDArray[np.float64], fraction: float = 0.1) -> float:
    """Mean of the lowest ``fraction`` of values (at least one value)."""
    v = np.sort(values[np.isfinite(values)])
    if len(v) == 0:
        return float("nan")
    k = max(1, int(np.floor(fraction * len(v))))
    return float(v[:k].mean())


class Coordinator:
    """Runs rounds for ``strategy`` over a population of ``population`` members (ids 0..n-1)."""

    def __init__(
        self,
        strategy: Strategy,
        *,
        schema: Schema,
        population: int,
        server_stages: Sequence[ServerStage] = (),
        central_evaluate: Callable[[Parameters], EvalResult] | None = None,
        evaluate_members: EvaluateMembers = "all",
        member_name: Callable[[int], str] = lambda m: f"member-{m}",
        collector: Collector | None = None,
    ) -> None:
        self.strategy = strategy
        self.schema = schema
        self.population = population
        self.server_stages = tuple(server_stages)
        self.central_evaluate = central_evaluate
        self.evaluate_members: EvaluateMembers = evaluate_members
        self.member_name = member_name
        self._model_bytes = encoded_size(schema)
        self.collector: Collector = collector if collector is not None else PlainCollector()
        if not self.collector.reveals_individual_updates and strategy.rule.needs_individual_updates:
            raise ConfigurationError(
                f"aggregation rule {strategy.rule.name!r} needs individual updates, which secure aggregation "
                "hides; use rule 'mean' (or group-wise robust aggregation) with secure aggregation"
            )

    def run_round(
        self,
        rnd: int,
        parameters: Parameters,
        *,
        candidates: int | npt.NDArray[np.int64] | None = None,
        evaluate: bool = True,
        evaluate_all: bool = False,
    ) -> RoundGenerator:
        start = time.perf_counter()
        strategy = self.strategy
        selected = strategy.select(rnd, self.population if candidates is None else candidates)
        requests = {int(m): FitRequest(parameters, strategy.fit_config(rnd, int(m))) for m in selected}
        ctx = ServerContext(round=rnd, members=selected, seed=strategy.seed)
        d = self.schema.size
        collection = yield from self.collector.collect(
            rnd,
            requests,
            dimension=d,
            ctx=ctx,
            screen=lambda m, u: self._screen(m, u, d, ctx),
            member_name=self.member_name,
        )
        accepted = collection.members
        dropouts, rejected = collection.dropouts, collection.rejected
        min_members = strategy.sampling.min_members
        if collection.count < min_members:
            problems = list(dropouts.values()) + [f"{self.member_name(m)}: {r}" for m, r in rejected.items()]
            shown = "; ".join(problems[:5]) + (f"; ... ({len(problems) - 5} more)" if len(problems) > 5 else "")
            raise RoundAborted(
                f"round {rnd}: {collection.count} valid update(s) from {len(requests)} selected member(s), "
                f"strategy.min_members is {min_members}" + (f". Problems: {shown}" if shown else "")
            )

        x = parameters.flatten()
        if collection.updates is not None:
            U = collection.updates
            W = collection.weights if collection.weights.sum() > 0 else np.ones(len(accepted))
            new_x = strategy.aggregate(rnd, x, U, W)
        else:
            assert collection.total is not None
            U = np.zeros((0, d))
            W = np.zeros(0)
            new_x = strategy.server_update(x, collection.total / collection.count)
        if self.server_stages:
            delta = new_x - x
            for stage in self.server_stages:
                delta = stage.after_aggregate(delta, ctx=ctx)
            new_x = x + delta
        new_params = Parameters.unflatten(new_x, self.schema)
        bytes_down = len(requests) * self._model_bytes + collection.extra_bytes_down

        central = None
        members_eval = None
        if evaluate:
            if self.central_evaluate is not None:
                central = self.central_evaluate(new_params)
            targets: Sequence[int] | npt.NDArray[np.int64] | range | None
            if self.evaluate_members == "none":
                targets = None
            elif evaluate_all or self.evaluate_members == "all":
                if candidates is None or isinstance(candidates, int | np.integer):
                    targets = range(self.population if candidates is None else int(candidates))
                else:
                    targets = candidates
            else:
                targets = accepted
            if targets is not None and len(targets) > 0:
                ereqs = {int(m): EvaluateRequest(rnd, new_params) for m in targets}
                ereplies = yield Exchange("evaluate", rnd, ereqs)
                members_eval = self._summarize_eval(ereplies)
                bytes_down += len(ereqs) * self._model_bytes
        return RoundOutcome(
            round=rnd,
            selected=selected,
            accepted=accepted,
            dropouts=dropouts,
            rejected=rejected,
            parameters=new_params,
            updates=U,
            weights=W,
            train_metrics=collection.train_metrics,
            bytes_up=collection.bytes_up,
            bytes_down=bytes_down,
            central=central,
            members_eval=members_eval,
            seconds=time.perf_counter() - start,
        )

    def _screen(self, member: int, u: npt.NDArray[np.float64], d: int, ctx: ServerContext) -> str | None:
        if u.ndim != 1 or u.shape[0] != d:
            return f"update has shape {list(u.shape)}, expected [{d}]"
        if not np.isfinite(u).all():
            bad = int(np.count_nonzero(~np.isfinite(u)))
            return f"update contains {bad} non-finite value(s) (NaN or inf)"
        for stage in self.server_stages:
            reason = stage.accept(member, u, ctx=ctx)
            if reason is not None:
                return f"{stage.name}: {reason}"
        return None

    @staticmethod
    def _summarize_eval(replies: Mapping[int, Any]) -> MemberEvaluation | None:
        acc: dict[int, float] = {}
        losses: list[float] = []
        for m, r in replies.items():
            if isinstance(r, EvaluateReply) and "accuracy" in r.metrics:
                acc[m] = float(r.metrics["accuracy"])
                losses.append(r.loss)
        if not acc:
            return None
        values = np.fromiter(acc.values(), dtype=np.float64, count=len(acc))
        return MemberEvaluation(
            members=len(acc),
            accuracy_mean=float(np.nanmean(values)),
            accuracy_worst10=worst_fraction_mean(values),
            loss_mean=float(np.nanmean(losses)) if losses else float("nan"),
            per_member=acc,
        )
