"""The member side of a round: run the task on local data, check what it returned, apply client stages.

A member runtime serves any number of members (one on a real node, all of them in an in-process
simulation). A member whose task raises, or returns something that breaks the task contract, becomes a
:class:`~fedswarm.rounds.messages.Dropout` carrying the reason; the round goes on without it.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from fedswarm.codec.tensors import encoded_size
from fedswarm.core.data import Arrays, LocalData
from fedswarm.core.errors import FedswarmError, TaskError
from fedswarm.core.parameters import Parameters, Schema
from fedswarm.core.task import EvalResult, FitResult, ProbabilisticTask, Task
from fedswarm.rounds.messages import Dropout, EvaluateReply, EvaluateRequest, FitReply, FitRequest
from fedswarm.rounds.stages import ClientContext, ClientStage
from fedswarm.rounds.state import InMemoryStateStore, StateStore
from fedswarm.task.metrics import classification_metrics

__all__ = ["MemberHandler", "MemberRuntime"]

MemberHandler = Callable[["MemberRuntime", int, Any, npt.NDArray[np.float64]], Any]
"""Serves an extra exchange kind for one member: ``(runtime, member, request, global_vector) -> reply``."""


def _describe_exception(exc: BaseException) -> str:
    if isinstance(exc, FedswarmError):
        return str(exc)
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}" if tb else ""
    return f"{type(exc).__name__}: {exc}{where}"


class MemberRuntime:
    """Runs fit and evaluate requests for members whose data ``data_for(member)`` returns."""

    def __init__(
        self,
        task: Task,
        data_for: Callable[[int], LocalData],
        *,
        schema: Schema,
        stages: Sequence[ClientStage] = (),
        state_store: StateStore | None = None,
        member_name: Callable[[int], str] = lambda m: f"member-{m}",
        handlers: Mapping[str, MemberHandler] | None = None,
    ) -> None:
        self.task = task
        self.handlers: dict[str, MemberHandler] = dict(handlers or {})
        self.data_for = data_for
        self.schema = schema
        self.stages = tuple(stages)
        self.state_store: StateStore = state_store if state_store is not None else InMemoryStateStore()
        self.member_name = member_name
        self._dense_bytes = encoded_size(schema)
        self._eval_cache: tuple[tuple[int, ...], Arrays, npt.NDArray[np.int64]] | None = None

    # fit --------------------------------------------------------------------------------------
    def fit(self, member: int, request: FitRequest, global_vector: npt.NDArray[np.float64]) -> FitReply | Dropout:
        """Train ``member`` and return its update, or a Dropout with the reason."""
        start = time.perf_counter()
        who = self.member_name(member)
        try:
            data = self.data_for(member)
            state = self.state_store.load(member)
            result = self.task.fit(request.parameters, data.train, config=request.config, state=state)
            update = self._update_vector(result, global_vector, who)
            if self.stages:
                ctx = ClientContext(member=member, round=request.config.round, seed=request.config.seed, state=state)
                payload = self._dense_bytes
                for stage in self.stages:
                    update = stage.apply(update, ctx=ctx)
                    payload = stage.payload_bytes(update, dense_bytes=payload)
            else:
                payload = self._dense_bytes
            self.state_store.save(member, state)
        except Exception as exc:  # a member's failure is a dropout, not a crash of the federation
            return Dropout(f"{who}: fit failed: {_describe_exception(exc)}")
        return FitReply(
            update=update,
            num_examples=int(result.num_examples),
            payload_bytes=payload,
            seconds=time.perf_counter() - start,
            metrics=dict(result.metrics),
        )

    def _update_vector(
        self, result: FitResult, global_vector: npt.NDArray[np.float64], who: str
    ) -> npt.NDArray[np.float64]:
        if not isinstance(result, FitResult):
            raise TaskError(f"{who}: task.fit must return FitResult, got {type(result).__name__}")
        if result.update is not None:
            result.update.check_schema(self.schema, who=f"{who}: update returned by task.fit")
            return result.update.flatten()
        assert result.parameters is not None
        result.parameters.check_schema(self.schema, who=f"{who}: parameters returned by task.fit")
        return result.parameters.flatten() - global_vector

    def handle(self, kind: str, member: int, request: Any, global_vector: npt.NDArray[np.float64]) -> Any:
        """Serve an exchange kind registered by an extension (secure aggregation phases ...)."""
        handler = self.handlers.get(kind)
        if handler is None:
            return Dropout(f"{self.member_name(member)}: no handler for exchange kind {kind!r}")
        try:
            return handler(self, member, request, global_vector)
        except Exception as exc:
            return Dropout(f"{self.member_name(member)}: {kind} failed: {_describe_exception(exc)}")

    # evaluate ---------------------------------------------------------------------------------
    def evaluate(self, member: int, request: EvaluateRequest) -> EvaluateReply | Dropout:
        try:
            data = self.data_for(member)
            res = self.task.evaluate(request.parameters, data.test)
            if not isinstance(res, EvalResult):
                raise TaskError(f"task.evaluate must return EvalResult, got {type(res).__name__}")
        except Exception as exc:
            return Dropout(f"{self.member_name(member)}: evaluate failed: {_describe_exception(exc)}")
        return EvaluateReply(num_examples=res.num_examples, loss=res.loss, metrics=dict(res.metrics))

    def evaluate_many(self, members: Iterable[int], request: EvaluateRequest) -> dict[int, EvaluateReply | Dropout]:
        """Evaluate several members; one batched forward pass when the task gives probabilities."""
        ids = tuple(int(m) for m in members)
        task = self.task
        if not isinstance(task, ProbabilisticTask) or not ids:
            return {m: self.evaluate(m, request) for m in ids}
        try:
            pooled, offsets = self._pooled_test(ids)
            proba = task.predict_proba(request.parameters, pooled.x)
            num_classes = proba.shape[1]
        except Exception:
            return {m: self.evaluate(m, request) for m in ids}
        out: dict[int, EvaluateReply | Dropout] = {}
        for i, m in enumerate(ids):
            lo, hi = int(offsets[i]), int(offsets[i + 1])
            if hi == lo:
                out[m] = Dropout(f"{self.member_name(m)}: no local test data")
                continue
            metrics = classification_metrics(pooled.y[lo:hi], proba[lo:hi], num_classes=num_classes)
            out[m] = EvaluateReply(num_examples=hi - lo, loss=metrics["loss"], metrics=metrics)
        return out

    def _pooled_test(self, ids: tuple[int, ...]) -> tuple[Arrays, npt.NDArray[np.int64]]:
        cache = self._eval_cache
        if cache is not None and cache[0] == ids:
            return cache[1], cache[2]
        parts = [self.data_for(m).test for m in ids]
        offsets = np.zeros(len(parts) + 1, dtype=np.int64)
        np.cumsum([len(p) for p in parts], out=offsets[1:])
        pooled = Arrays.concatenate(parts)
        self._eval_cache = (ids, pooled, offsets)
        return pooled, offsets

    def parameters_from(self, vector: npt.NDArray[Any]) -> Parameters:
        return Parameters.unflatten(vector, self.schema)
