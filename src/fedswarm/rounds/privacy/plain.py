"""Privacy without secure aggregation: members' protected updates travel in the clear.

Two uses:

* ``dp = "local"``: members run DP-SGD; their updates are already differentially private with respect
  to their records, so the aggregator may see them: the collection keeps individual updates (robust
  rules and per-update screens work) with uniform weights (a member's record count is not protected,
  so it is not sent).
* ``dp = "central"``: the aggregator is trusted; members clip (and report the unclipped bit), the
  aggregator re-clips every update (so the sensitivity bound holds even if a member did not), screens
  it, sums, and releases the noised sum over the cohort (:class:`~.release.SumRelease`).

The member side is :meth:`ClearMemberSide.fit`, the ``privacy.fit`` handler.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from fedswarm.core.errors import RoundAborted
from fedswarm.privacy.dp.clipping import clip_l2
from fedswarm.rounds.collect import Collection, CollectorGenerator
from fedswarm.rounds.member import MemberHandler, MemberRuntime
from fedswarm.rounds.messages import Dropout, Exchange, FitRequest
from fedswarm.rounds.privacy.member import MemberProtection
from fedswarm.rounds.privacy.messages import FitOrder, PrivateFitReply, PrivateFitRequest
from fedswarm.rounds.privacy.release import SumRelease
from fedswarm.rounds.privacy.wire import expect
from fedswarm.rounds.stages import ServerContext

__all__ = ["KIND_FIT", "ClearCollector", "ClearMemberSide"]

KIND_FIT = "privacy.fit"
_REPLY_OVERHEAD = 64


class ClearMemberSide:
    """Member handler of ``privacy.fit``."""

    def __init__(self, protection: MemberProtection, *, send_examples: bool) -> None:
        self.protection = protection
        self.send_examples = send_examples

    def handlers(self) -> dict[str, MemberHandler]:
        return {KIND_FIT: self.fit}

    def fit(
        self, runtime: MemberRuntime, member: int, request: Any, global_vector: npt.NDArray[np.float64]
    ) -> PrivateFitReply | Dropout:
        request = expect(request, PrivateFitRequest, kind=KIND_FIT)
        out = self.protection.protected_update(runtime, member, request.order, request.privacy, global_vector)
        if isinstance(out, Dropout):
            return out
        names = tuple(sorted(out.metrics))
        return PrivateFitReply(
            member=runtime.member_name(member),
            vector=out.vector,
            num_examples=out.num_examples if self.send_examples else 0,
            metric_names=names,
            metric_values=tuple(out.metrics[k] for k in names),
        )


class ClearCollector:
    """Aggregator side of ``privacy.fit`` (see the module docstring).

    Parameters
    ----------
    release
        The run's DP release state.
    min_contributors
        A sum of fewer accepted updates is not released (``strategy.min_members``).
    individual
        Keep individual updates (``dp = "local"``) instead of releasing a noised sum.
    """

    def __init__(self, release: SumRelease, *, min_contributors: int, individual: bool) -> None:
        self.release = release
        self.min_contributors = int(min_contributors)
        self.individual = bool(individual)
        self.last_round: dict[str, Any] = {}

    @property
    def reveals_individual_updates(self) -> bool:
        return self.individual

    def collect(
        self,
        rnd: int,
        requests: Mapping[int, FitRequest],
        *,
        dimension: int,
        ctx: ServerContext,
        screen: Callable[[int, npt.NDArray[np.float64]], str | None],
        member_name: Callable[[int], str],
    ) -> CollectorGenerator:
        release = self.release
        privacy = release.member_privacy()
        clip = privacy.clip
        length = dimension + release.extra
        orders = {m: PrivateFitRequest(FitOrder.from_config(r.config), privacy) for m, r in requests.items()}
        replies = yield Exchange(KIND_FIT, rnd, orders)
        accepted: list[int] = []
        rows: list[npt.NDArray[np.float64]] = []
        bits: list[float] = []
        dropouts: dict[int, str] = {}
        rejected: dict[int, str] = {}
        bytes_up = 0
        loss_sum, loss_n = 0.0, 0
        for m in requests:
            reply = replies.get(m)
            if reply is None or isinstance(reply, Dropout):
                dropouts[m] = reply.reason if reply is not None else f"{member_name(m)}: no reply"
                continue
            if not isinstance(reply, PrivateFitReply):
                rejected[m] = f"unexpected reply type {type(reply).__name__}"
                continue
            v = np.asarray(reply.vector, dtype=np.float64)
            bytes_up += v.nbytes + _REPLY_OVERHEAD
            if v.shape != (length,) or not np.isfinite(v).all():
                rejected[m] = f"protected update has shape {list(v.shape)} (expected [{length}]) or non-finite values"
                continue
            u = v[:dimension]
            if clip > 0:
                u = clip_l2(u, max_norm=clip)[0]
            reason = screen(m, u)
            if reason is not None:
                rejected[m] = reason
                continue
            accepted.append(m)
            rows.append(u)
            if release.extra:
                bits.append(1.0 if v[dimension] >= 0.5 else 0.0)
            metrics = dict(zip(reply.metric_names, reply.metric_values, strict=False))
            if not release.client_level and "train_loss" in metrics:
                loss_sum += metrics["train_loss"]
                loss_n += 1
        self.last_round = {"contributors": len(accepted), "transport": "clear"}
        common: dict[str, Any] = {"members": accepted, "dropouts": dropouts, "rejected": rejected, "bytes_up": bytes_up}
        train_metrics = {"train_loss": loss_sum / loss_n} if loss_n else {}
        if self.individual:
            return Collection(
                updates=np.stack(rows) if rows else np.zeros((0, dimension)),
                weights=np.zeros(0),
                total=None,
                count=len(accepted),
                train_metrics=train_metrics,
                **common,
            )
        if len(accepted) < self.min_contributors:
            raise RoundAborted(
                f"round {rnd}: {len(accepted)} valid update(s) from {len(requests)} selected member(s), "
                f"strategy.min_members is {self.min_contributors}; no noised sum is released"
            )
        summed = np.sum(rows, axis=0)
        if release.extra:
            summed = np.concatenate([summed, [float(np.sum(bits))]])
        total, count = release.release(
            summed, dimension=dimension, contributors=len(accepted), cohort=len(requests), noise_added=False
        )
        return Collection(updates=None, weights=np.zeros(0), total=total, count=count, **common)
