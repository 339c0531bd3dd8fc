"""Record a run on the ledger: the run observer that the simulation engine (and a node) attach.

Per run, :class:`LedgerRecorder` writes ``federation_created`` (spec digest, members and keys, initial
model); per round ``member_admitted`` for members appearing for the first time (large federations),
``round_opened``, one ``update_submitted`` per accepted update, signed by its member,
``aggregate_committed`` and ``evaluation_reported``; every ``checkpoint_every`` rounds and at the end a
checkpoint signed by the coordinator and cosigned by a quorum of members (strictly more than the spec's
``ledger.quorum`` of them, 2/3 by default, as ``federation_created.quorum`` records). Each round's entries are
appended in one transaction, after the round's model (and, with ``retain_updates``, its updates) are
stored as objects.

**Update digest.** An accepted update is row ``i`` of ``outcome.updates`` (float64). Its digest is
:func:`fedswarm.codec.tensors.digest` of ``Parameters.unflatten(row, schema64)``, where ``schema64`` is the
model's schema with every dtype replaced by little-endian float64: the canonical safetensors bytes of the
update as named float64 tensors. ``bytes`` is the length of that encoding and ``norm`` the L2 norm of the
row. A retained update is stored as exactly those bytes, so the ledger holds it under its digest.

**Annotations.** When the outcome carries ``annotations`` (set by round extensions), flagged updates in
``annotations["anomalies"]`` become ``anomaly_flagged`` entries and the budget in
``annotations["privacy"]`` a ``privacy_spent`` entry, both after the round's evaluations.

**Keys.** In simulation every party's key is derived from the seed (:mod:`fedswarm.ledger.simkeys`):
the ledger is verifiable but proves integrity only, not who acted.

**Background writing.** On Linux the writing (encoding, hashing, signing, cosigning, SQLite) runs by
default in a forked writer process (:func:`fedswarm.ledger.recorder_core.serve`) fed through a queue, so
it overlaps with training on a second core; this process only turns each round into plain data (a copy
of the accepted updates as one float64 matrix, names, metrics and the model's bytes): encoding, hashing
and storing each update happen in the writer, which commits a round's entries and objects in one
transaction. Forking, unlike spawning, does not re-import the caller's main module, so scripts without a
main guard keep working. ``close`` waits for the writer to finish and raises :class:`LedgerRecorderError`
if it failed. With ``background=False`` (and on other platforms) everything happens in this process.

The recorder depends on no higher layer: it reads the run's start, outcomes and settings through the
small protocols below, which :class:`fedswarm.rounds.observer.RunStart`,
:class:`fedswarm.rounds.coordinator.RoundOutcome` and :class:`fedswarm.spec.schema.LedgerSpec` satisfy.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from fedswarm.codec import canonical
from fedswarm.codec.tensors import digest as tensor_digest
from fedswarm.codec.tensors import encode as encode_parameters
from fedswarm.core.errors import ConfigurationError, FedswarmError
from fedswarm.core.parameters import Parameters, Schema, TensorSpec
from fedswarm.ledger.recorder_core import RecorderCore, RoundRecord, StartRecord, UpdateRows, serve
from fedswarm.ledger.store import DB_NAME, Durability

__all__ = [
    "EAGER_MEMBERS",
    "LedgerRecorder",
    "LedgerRecorderError",
    "LedgerSettings",
    "OutcomeLike",
    "RunStartLike",
    "float64_schema",
    "update_digest",
]

EAGER_MEMBERS = 1024
"""Federations up to this size list every member's key in ``federation_created``; larger ones admit
each member with a ``member_admitted`` entry when it first appears (keys are derived lazily)."""


class LedgerRecorderError(FedswarmError):
    """Writing the ledger failed (in the background writer or in this process)."""


class LedgerSettings(Protocol):
    """The ``[ledger]`` section of a spec."""

    @property
    def retain_updates(self) -> bool: ...

    @property
    def checkpoint_every(self) -> int: ...

    @property
    def quorum(self) -> tuple[int, int]:
        """Strictly more than this fraction of the members must cosign a checkpoint (``"N/D"`` in TOML)."""
        ...


class RunStartLike(Protocol):
    """What a run tells its observers when it starts."""

    @property
    def federation(self) -> str: ...

    @property
    def spec(self) -> Mapping[str, Any]: ...

    @property
    def spec_digest(self) -> str: ...

    @property
    def members(self) -> Sequence[str]: ...

    @property
    def strategy(self) -> str: ...

    @property
    def initial_model(self) -> Parameters: ...

    @property
    def initial_digest(self) -> str: ...

    @property
    def seed(self) -> int: ...


class _EvalLike(Protocol):
    @property
    def loss(self) -> float: ...

    @property
    def metrics(self) -> Mapping[str, float]: ...


class _MembersEvalLike(Protocol):
    @property
    def members(self) -> int: ...

    @property
    def accuracy_mean(self) -> float: ...

    @property
    def accuracy_worst10(self) -> float: ...

    @property
    def loss_mean(self) -> float: ...


class OutcomeLike(Protocol):
    """A committed round, as the coordinator reports it."""

    @property
    def round(self) -> int: ...

    @property
    def selected(self) -> npt.NDArray[np.int64]: ...

    @property
    def accepted(self) -> Sequence[int]: ...

    @property
    def dropouts(self) -> Mapping[int, str]: ...

    @property
    def rejected(self) -> Mapping[int, str]: ...

    @property
    def updates(self) -> npt.NDArray[np.float64]: ...

    @property
    def weights(self) -> npt.NDArray[np.float64]: ...

    @property
    def train_metrics(self) -> Mapping[str, float]: ...

    @property
    def central(self) -> _EvalLike | None: ...

    @property
    def members_eval(self) -> _MembersEvalLike | None: ...


def float64_schema(schema: Schema) -> Schema:
    """``schema`` with every tensor's dtype replaced by little-endian float64 (the schema of updates)."""
    return Schema(tuple(TensorSpec(t.name, t.shape, "<f8") for t in schema.tensors))


def update_digest(row: npt.NDArray[np.float64], schema64: Schema) -> str:
    """Digest of one update row: canonical safetensors of the row as named float64 tensors."""
    return tensor_digest(Parameters.unflatten(np.asarray(row, dtype=np.float64), schema64))


def _default_member_name(member: int) -> str:
    return f"member-{member:05d}"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _metrics(values: Mapping[str, float]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key, value in values.items():
        number = float(value)
        out[str(key)] = number if np.isfinite(number) else None
    return out


def _anomalies(notes: Any) -> tuple[tuple[str, dict[str, float | None], str], ...]:
    """``outcome.annotations["anomalies"]`` (dicts with ``member``, ``reason`` and numeric scores)."""
    if not isinstance(notes, Sequence):
        return ()
    out = []
    for note in notes:
        if not isinstance(note, Mapping) or not note.get("flagged", True):
            continue
        scores: dict[str, float | None] = {}
        for key, value in note.items():
            if key in ("member", "round", "flagged", "reason") or isinstance(value, bool):
                continue
            if value is None:
                scores[str(key)] = None
            elif isinstance(value, int | float):
                number = float(value)
                scores[str(key)] = number if np.isfinite(number) else None
        out.append((str(note["member"]), scores, str(note.get("reason", ""))))
    return tuple(out)


def _privacy(note: Any) -> tuple[float, float, str] | None:
    """``outcome.annotations["privacy"]`` (``epsilon``, ``delta``, ``accountant``) when a budget is kept."""
    if not isinstance(note, Mapping) or note.get("epsilon") is None:
        return None
    return float(note["epsilon"]), float(note.get("delta") or 0.0), str(note.get("accountant") or "unknown")


class LedgerRecorder:
    """Writes a run's ledger into ``folder`` (a :class:`~fedswarm.rounds.observer.RunObserver`).

    Parameters
    ----------
    folder
        The ledger folder to create (``RUN_DIR/ledger``); it must not hold a ledger yet.
    spec
        ``retain_updates`` and ``checkpoint_every`` (the spec's ``[ledger]`` section).
    schema
        The model's schema (names and shapes of updates).
    member_name
        Name of member ``id``; default: the names of ``RunStart.members``, else ``member-{id:05d}``.
    durability
        ``"normal"`` survives crashes of the process, ``"full"`` also power loss.
    clock
        Milliseconds since the epoch, for checkpoint times.
    background
        Write in a forked process (the default on Linux) or in this one (the default elsewhere).

    Raises
    ------
    ConfigurationError
        If ``checkpoint_every`` is below 1 or the folder already holds a ledger.
    """

    def __init__(
        self,
        folder: Path,
        *,
        spec: LedgerSettings,
        schema: Schema,
        member_name: Callable[[int], str] | None = None,
        durability: Durability = "normal",
        clock: Callable[[], int] = _now_ms,
        background: bool | None = None,
    ) -> None:
        if spec.checkpoint_every < 1:
            raise ConfigurationError(f"ledger.checkpoint_every is {spec.checkpoint_every}, it must be at least 1")
        if (Path(folder) / DB_NAME).exists():
            raise ConfigurationError(f"{folder} already holds a ledger: use a new run directory")
        self.folder = Path(folder)
        self._retain = bool(spec.retain_updates)
        numerator, denominator = spec.quorum
        if not 0 < numerator < denominator:
            raise ConfigurationError(f"ledger.quorum is {numerator}/{denominator}, it must be between 0 and 1")
        self._quorum = (int(numerator), int(denominator))
        self._schema64 = float64_schema(schema)
        self._member_name = member_name
        self._clock = clock
        self._names: Sequence[str] = ()
        self._core = RecorderCore(
            self.folder,
            eager_members=EAGER_MEMBERS,
            checkpoint_every=int(spec.checkpoint_every),
            durability=durability,
        )
        fork = "fork" in multiprocessing.get_all_start_methods() and sys.platform.startswith("linux")
        self._background = fork if background is None else background and fork
        self._process: BaseProcess | None = None
        self._commands: Any = None
        self._replies: Connection | None = None
        self._started = False
        self._closed = False

    # -- observer protocol ------------------------------------------------------------------------
    def on_start(self, start: RunStartLike) -> None:
        """Create the ledger and write ``federation_created``."""
        self._names = list(start.members)
        federation_spec = start.spec.get("federation", {})
        declared = federation_spec.get("members", 0) if isinstance(federation_spec, Mapping) else 0
        config = {name: start.spec[name] for name in ("strategy", "training", "stages") if name in start.spec}
        record = StartRecord(
            federation=start.federation,
            spec_digest=start.spec_digest,
            config_digest=canonical.digest(config).hex(),
            members=tuple(self._names),
            population=len(self._names) or int(declared),
            strategy=start.strategy,
            initial_model=encode_parameters(start.initial_model),
            initial_digest=start.initial_digest,
            seed=int(start.seed),
            quorum=self._quorum,
        )
        if self._background:
            self._spawn()
        self._started = True
        self._dispatch("start", record)

    def on_round(self, outcome: OutcomeLike, *, model: Parameters, model_digest: str) -> None:
        """Record one committed round (its entries in one transaction; a checkpoint when due)."""
        if not self._started:
            raise LedgerRecorderError("the ledger recorder got a round before on_start")
        hidden = np.shape(outcome.updates)[0] != len(outcome.accepted)  # a secure sum: no individual update
        secure_contributors = tuple(self._name(int(m)) for m in outcome.accepted) if hidden else ()
        rows = None
        if not hidden:
            weights = np.asarray(outcome.weights, dtype=np.float64)
            rows = UpdateRows(
                members=tuple(self._name(int(m)) for m in outcome.accepted),
                rows=np.array(outcome.updates, dtype=np.float64),  # a copy: the queue pickles it later
                examples=tuple(float(w) for w in weights[: len(outcome.accepted)]),
                schema=self._schema64,
                retain=self._retain,
            )
        central = None
        if outcome.central is not None:
            central = _metrics({"loss": outcome.central.loss, **dict(outcome.central.metrics)})
        members_eval = outcome.members_eval
        members_metrics = None
        if members_eval is not None:
            members_metrics = _metrics(
                {
                    "accuracy": members_eval.accuracy_mean,
                    "accuracy_worst10": members_eval.accuracy_worst10,
                    "loss": members_eval.loss_mean,
                }
            )
        annotations = getattr(outcome, "annotations", None)
        if not isinstance(annotations, Mapping):
            annotations = {}
        record = RoundRecord(
            round=int(outcome.round),
            selected=tuple(self._name(int(m)) for m in outcome.selected),
            submissions=(),
            model=encode_parameters(model),
            model_digest=model_digest,
            train_metrics=_metrics(outcome.train_metrics),
            rejected={self._name(int(m)): str(reason) for m, reason in outcome.rejected.items()},
            dropouts={self._name(int(m)): str(reason) for m, reason in outcome.dropouts.items()},
            central=central,
            members_evaluated=int(members_eval.members) if members_eval is not None else 0,
            members_metrics=members_metrics,
            time_ms=self._clock(),
            anomalies=_anomalies(annotations.get("anomalies")),
            privacy=_privacy(annotations.get("privacy")),
            secure_contributors=secure_contributors,
            updates=rows,
        )
        self._dispatch("round", record)

    def on_finish(self, summary: Mapping[str, Any]) -> None:
        """Write the final checkpoint (unless the last one already covers the whole log)."""
        del summary
        if self._started:
            self._dispatch("finish", self._clock())

    def close(self) -> None:
        """Finish writing and close the ledger (idempotent).

        Raises
        ------
        LedgerRecorderError
            If writing failed; the ledger then holds what was committed before the failure.
        """
        if self._closed:
            return
        self._closed = True
        if self._process is None:
            try:
                self._core.close()
            except Exception as exc:
                raise LedgerRecorderError(f"closing the ledger {self.folder} failed: {exc}") from exc
            return
        self._commands.put(("close", None))
        errors = []
        assert self._replies is not None
        try:
            while True:
                if not self._replies.poll(timeout=600):
                    errors.append("the ledger writer did not finish within 600 s")
                    break
                kind, message = self._replies.recv()
                if kind == "closed":
                    break
                errors.append(str(message))
        except (EOFError, OSError):
            errors.append("the ledger writer process exited unexpectedly")
        finally:
            self._process.join(timeout=60)
            if self._process.is_alive():
                self._process.kill()
            self._commands.close()
            self._replies.close()
        if errors:
            raise LedgerRecorderError(f"writing the ledger {self.folder} failed: {errors[0]}")

    # -- helpers ----------------------------------------------------------------------------------
    def _spawn(self) -> None:
        # fork: no re-import of the caller's main module (scripts without a main guard keep working);
        # the writer only uses SQLite, hashing, signing and files, never the parent's threads.
        context = multiprocessing.get_context("fork")
        receive, send = context.Pipe(duplex=False)
        self._commands = context.Queue()
        self._replies = receive
        self._process = context.Process(
            target=serve, args=(self._commands, send, self._core), name="fedswarm-ledger-writer", daemon=True
        )
        self._process.start()
        send.close()

    def _dispatch(self, name: str, payload: Any) -> None:
        if self._closed:
            raise LedgerRecorderError("the ledger recorder is closed")
        if self._process is None:
            try:
                if name == "start":
                    self._core.start(payload)
                elif name == "round":
                    self._core.round(payload)
                else:
                    self._core.checkpoint(payload)
            except FedswarmError:
                raise
            except (ValueError, OSError) as exc:
                raise LedgerRecorderError(f"writing the ledger {self.folder} failed: {exc}") from exc
            return
        assert self._replies is not None
        if self._replies.poll():
            _kind, message = self._replies.recv()
            raise LedgerRecorderError(f"writing the ledger {self.folder} failed: {message}")
        self._commands.put((name, payload))

    def _name(self, member: int) -> str:
        if self._member_name is not None:
            return self._member_name(member)
        if 0 <= member < len(self._names):
            return self._names[member]
        return _default_member_name(member)
