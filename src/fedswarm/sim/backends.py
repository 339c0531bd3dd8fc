"""Where simulated members run: in this process, in worker processes, or on a Ray cluster.

Every backend executes one :class:`~fedswarm.rounds.messages.Exchange` at a time and returns one reply
per member. The in-process backend calls the member runtime in a plain loop: no RPC, no serialization,
no polling. The process and Ray backends pay for serialization and pay off when local training is heavy.
Members are pinned to workers (``member % workers``) so a worker's cache of member state stays valid.

Time-outs: the process and Ray backends abandon a member that exceeds ``client_timeout`` (the worker is
replaced); the in-process backend cannot interrupt running Python code, so it marks a member whose fit
took longer than the limit as timed out after the call returns.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from fedswarm.core.errors import ConfigurationError
from fedswarm.rounds.member import MemberRuntime
from fedswarm.rounds.messages import Dropout, EvaluateRequest, Exchange, FitReply, FitRequest
from fedswarm.spec.schema import Spec, parse_spec

__all__ = ["Backend", "InProcessBackend", "ProcessBackend", "RayBackend", "make_backend"]


class Backend(Protocol):
    name: str

    def execute(self, exchange: Exchange[Any], global_vector: npt.NDArray[np.float64]) -> dict[int, Any]: ...

    def close(self) -> None: ...


def _run_on_runtime(
    runtime: MemberRuntime,
    kind: str,
    requests: Mapping[int, Any],
    global_vector: npt.NDArray[np.float64],
    timeout: float,
) -> dict[int, Any]:
    if kind == "fit":
        out: dict[int, Any] = {}
        for m, req in requests.items():
            assert isinstance(req, FitRequest)
            reply = runtime.fit(m, req, global_vector)
            if timeout > 0 and isinstance(reply, FitReply) and reply.seconds > timeout:
                reply = Dropout(f"{runtime.member_name(m)}: timed out ({reply.seconds:.1f} s > {timeout:g} s)")
            out[m] = reply
        flush = getattr(runtime.state_store, "flush", None)
        if flush is not None:
            flush()
        return out
    if kind == "evaluate":
        if not requests:
            return {}
        first = next(iter(requests.values()))
        assert isinstance(first, EvaluateRequest)
        return dict(runtime.evaluate_many(requests.keys(), first))
    if kind in runtime.handlers:
        return {m: runtime.handle(kind, m, req, global_vector) for m, req in requests.items()}
    raise ConfigurationError(f"no member handler is registered for exchanges of kind {kind!r}")


class InProcessBackend:
    """Call the member runtime directly, one member after another."""

    name = "inprocess"

    def __init__(self, runtime: MemberRuntime, *, client_timeout: float = 0.0) -> None:
        self.runtime = runtime
        self.client_timeout = client_timeout

    def execute(self, exchange: Exchange[Any], global_vector: npt.NDArray[np.float64]) -> dict[int, Any]:
        return _run_on_runtime(self.runtime, exchange.kind, exchange.requests, global_vector, self.client_timeout)

    def close(self) -> None:
        self.runtime.state_store.close()


# --- worker processes -------------------------------------------------------------------------------
_WORKER_RUNTIME: MemberRuntime | None = None


def _worker_init(spec_dict: dict[str, Any], state_dir: str | None, worker: int) -> None:
    global _WORKER_RUNTIME
    from fedswarm.sim.world import build_world

    spec = parse_spec(spec_dict)
    _WORKER_RUNTIME = build_world(spec, state_dir=Path(state_dir) if state_dir else None, worker=worker).runtime


def _worker_run(
    kind: str, requests: dict[int, Any], global_vector: npt.NDArray[np.float64], timeout: float
) -> dict[int, Any]:
    assert _WORKER_RUNTIME is not None, "worker was not initialised"
    return _run_on_runtime(_WORKER_RUNTIME, kind, requests, global_vector, timeout)


def _split(requests: Mapping[int, Any], workers: int) -> list[dict[int, Any]]:
    parts: list[dict[int, Any]] = [{} for _ in range(workers)]
    for m, r in requests.items():
        parts[m % workers][m] = r
    return parts


def _timeout_reason(m: int, timeout: float) -> Dropout:
    return Dropout(f"member-{m:05d}: timed out (no reply within {timeout:g} s)")


class ProcessBackend:
    """One single-worker process pool per worker; member ``m`` always runs on worker ``m % workers``."""

    name = "processes"

    def __init__(self, spec: Spec, *, workers: int, state_dir: Path | None, client_timeout: float = 0.0) -> None:
        self.spec_dict = spec.to_dict()
        self.workers = max(1, workers)
        self.state_dir = str(state_dir) if state_dir else None
        self.client_timeout = client_timeout
        self._ctx = mp.get_context("spawn")
        self._pools: list[cf.ProcessPoolExecutor] = [self._new_pool(i) for i in range(self.workers)]

    def _new_pool(self, worker: int) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(
            max_workers=1,
            mp_context=self._ctx,
            initializer=_worker_init,
            initargs=(self.spec_dict, self.state_dir, worker),
        )

    def execute(self, exchange: Exchange[Any], global_vector: npt.NDArray[np.float64]) -> dict[int, Any]:
        parts = _split(exchange.requests, self.workers)
        futures: dict[cf.Future[dict[int, Any]], int] = {}
        for w, part in enumerate(parts):
            if part:
                fut = self._pools[w].submit(_worker_run, exchange.kind, part, global_vector, self.client_timeout)
                futures[fut] = w
        deadline = None
        if self.client_timeout > 0:
            longest = max((len(p) for p in parts), default=0)
            deadline = self.client_timeout * max(1, longest) + 5.0
        done, pending = cf.wait(futures, timeout=deadline)
        out: dict[int, Any] = {}
        for fut in done:
            w = futures[fut]
            try:
                out.update(fut.result())
            except Exception as exc:  # the worker process died
                for m in parts[w]:
                    out[m] = Dropout(f"member-{m:05d}: worker process failed: {type(exc).__name__}: {exc}")
                self._restart(w)
        for fut in pending:
            w = futures[fut]
            for m in parts[w]:
                out[m] = _timeout_reason(m, self.client_timeout)
            self._restart(w)
        return out

    def _restart(self, worker: int) -> None:
        pool = self._pools[worker]
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.kill()
        pool.shutdown(wait=False, cancel_futures=True)
        self._pools[worker] = self._new_pool(worker)

    def close(self) -> None:
        for pool in self._pools:
            pool.shutdown(wait=True, cancel_futures=True)


class RayBackend:
    """Ray actors, one per worker, each holding the data and task; members pinned to actors."""

    name = "ray"

    def __init__(
        self,
        spec: Spec,
        *,
        workers: int,
        state_dir: Path | None,
        client_timeout: float = 0.0,
        address: str | None = None,
    ) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigurationError("the Ray backend needs Ray: pip install 'fedswarm[ray]'") from None
        self._ray = ray
        if not ray.is_initialized():
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(
                    num_cpus=max(1, workers),
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                )
            self._owns_ray = True
        else:
            self._owns_ray = False
        self.workers = max(1, workers)
        self.client_timeout = client_timeout
        self.spec_dict = spec.to_dict()
        self.state_dir = str(state_dir) if state_dir else None

        @ray.remote(num_cpus=1)
        class _Worker:
            def __init__(self, spec_dict: dict[str, Any], state_dir: str | None, worker: int) -> None:
                _worker_init(spec_dict, state_dir, worker)

            def run(
                self, kind: str, requests: dict[int, Any], gvec: npt.NDArray[np.float64], timeout: float
            ) -> dict[int, Any]:
                return _worker_run(kind, requests, gvec, timeout)

        self._actor_cls = _Worker
        self._actors = [self._new_actor(i) for i in range(self.workers)]

    def _new_actor(self, worker: int) -> Any:
        return self._actor_cls.remote(self.spec_dict, self.state_dir, worker)  # type: ignore[attr-defined]

    def execute(self, exchange: Exchange[Any], global_vector: npt.NDArray[np.float64]) -> dict[int, Any]:
        ray = self._ray
        parts = _split(exchange.requests, self.workers)
        gref = ray.put(global_vector)
        refs: dict[Any, int] = {}
        for w, part in enumerate(parts):
            if part:
                refs[self._actors[w].run.remote(exchange.kind, part, gref, self.client_timeout)] = w
        timeout = None
        if self.client_timeout > 0:
            timeout = self.client_timeout * max(1, max(len(p) for p in parts)) + 5.0
        ready, pending = ray.wait(list(refs), num_returns=len(refs), timeout=timeout)
        out: dict[int, Any] = {}
        for ref in ready:
            w = refs[ref]
            try:
                out.update(ray.get(ref))
            except Exception as exc:
                for m in parts[w]:
                    out[m] = Dropout(f"member-{m:05d}: Ray worker failed: {type(exc).__name__}: {exc}")
                self._actors[w] = self._new_actor(w)
        for ref in pending:
            w = refs[ref]
            for m in parts[w]:
                out[m] = _timeout_reason(m, self.client_timeout)
            ray.kill(self._actors[w])
            self._actors[w] = self._new_actor(w)
        return out

    def close(self) -> None:
        for actor in self._actors:
            self._ray.kill(actor)
        if self._owns_ray:
            self._ray.shutdown()


def make_backend(spec: Spec, runtime: MemberRuntime, *, state_dir: Path | None, name: str | None = None) -> Backend:
    kind = name or spec.simulation.backend
    workers = spec.simulation.workers or max(1, (mp.cpu_count() or 1))
    timeout = spec.simulation.client_timeout
    if kind == "inprocess":
        return InProcessBackend(runtime, client_timeout=timeout)
    if kind == "processes":
        return ProcessBackend(spec, workers=workers, state_dir=state_dir, client_timeout=timeout)
    if kind == "ray":
        return RayBackend(
            spec,
            workers=workers,
            state_dir=state_dir,
            client_timeout=timeout,
            address=spec.simulation.ray_address,
        )
    raise ConfigurationError(f"simulation.backend: unknown backend {kind!r}; choose inprocess, processes or ray")
