"""Leading rounds and following leaders: the main loop of a node in star and swarm topologies.

* star, aggregator: waits until the members are reachable (up to ``network.gather_timeout``), then leads
  round after round; a round aborted below ``min_members`` is retried after ``probe_interval``.
* star, member: follows the aggregator's commits; catches up from peers when it falls behind.
* swarm: every member computes the round's leader order (:func:`fedswarm.node.leader.leader_order`);
  the member whose turn it is leads; the others wait for the commit, probing the current leader, and
  the next one takes over when it is unreachable or its time slot ran out.

A leader delivers the round engine's exchanges (:class:`~fedswarm.node.roundloop.ExchangeDriver`),
stores the new model and strategy state, and sends a signed commit to every member (with the model and
state inline when they are small); members check it (previous model, leader's turn, their own update
among the declared inputs) before adopting it. A star aggregator sends each commit together with the
next round's first assignments (:meth:`~fedswarm.node.roundloop.ExchangeDriver.hold`).

Run extensions (privacy, robustness) run as in ``fedswarm simulate``: the coordinator gets their collector
and server stages, and after every round each extension's ``after_round`` annotates the outcome (the
annotations travel in the commit's record) and may stop the run (a privacy budget is exhausted: the
commit's record says why, every node adopting it finishes). The extensions' server state goes into
every commit (``Commit.extension_state``, canonical JSON); a leader restores it from the last commit
before it leads (:func:`~fedswarm.rounds.extension.load_extension_states`), so the next swarm leader or a
restarted aggregator accounts exactly as the previous leader would have. The last round's record carries
the extensions' run summary.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING

import numpy as np

from fedswarm.codec import canonical
from fedswarm.codec import tensors as tensor_codec
from fedswarm.core.errors import FedswarmError, RoundAborted
from fedswarm.core.parameters import Parameters
from fedswarm.node.exchanges import round_seconds
from fedswarm.node.leader import takeover_rank
from fedswarm.node.persist import Progress
from fedswarm.node.records import outcome_record
from fedswarm.node.roundloop import PendingCommit, commit_recipients, summarize_inputs
from fedswarm.rounds.coordinator import Coordinator, RoundOutcome
from fedswarm.rounds.extension import extension_states, load_extension_states
from fedswarm.rounds.observer import RunStart
from fedswarm.spec.build import build_strategy
from fedswarm.spec.extensions import resolve_collector
from fedswarm.transport._generated.fedswarm.v1 import federation_pb2 as pb
from fedswarm.transport.blobs import inline_limit
from fedswarm.transport.envelope import open_body

if TYPE_CHECKING:
    from fedswarm.node.daemon import NodeDaemon

__all__ = ["Leadership"]

log = logging.getLogger("fedswarm.node")


class Leadership:
    """Decides when this node leads, leads, and checks other leaders' right to lead."""

    def __init__(self, node: NodeDaemon) -> None:
        self.node = node
        spec = node.spec
        world = node.world
        self.strategy = build_strategy(spec)
        holdout = world.holdout
        task = world.task
        self.extensions = world.extensions
        self.coordinator = Coordinator(
            self.strategy,
            schema=world.schema,
            population=node.roster.population,
            server_stages=[st for ext in self.extensions for st in ext.server_stages()],
            central_evaluate=(lambda p: task.evaluate(p, holdout)) if holdout is not None else None,
            evaluate_members=spec.evaluation.members,
            member_name=node.roster.name_of,
            collector=resolve_collector(self.extensions),
        )
        self._initial_state = self._state_bytes()
        s = spec.network
        self.slot = round_seconds(spec) + s.evaluate_timeout + 2 * s.rpc_timeout + s.takeover_grace
        self._attempt = 0
        self._leading: int | None = None
        self._held: tuple[int, str] | None = None  # (round, model) whose state the strategy and extensions hold

    def run_start(self) -> RunStart:
        spec = self.node.spec
        spec_dict = spec.to_dict()
        initial = self.node.world.initial
        return RunStart(
            federation=spec.federation.name,
            spec=spec_dict,
            spec_digest=canonical.digest(spec_dict).hex(),
            members=list(self.node.roster.names),
            strategy=spec.strategy.name,
            initial_model=initial,
            initial_digest=tensor_codec.digest(initial),
            seed=spec.federation.seed,
        )

    # who may lead ---------------------------------------------------------------------------------
    def leader_problem(self, rnd: int, sender: str) -> str | None:
        """Why ``sender`` may not lead round ``rnd`` now, or ``None``."""
        node = self.node
        if node.topology == "star":
            aggregator = node.roster.aggregator
            return None if sender == aggregator else f"{sender} is not the aggregator ({aggregator})"
        if sender == node.me:
            return None
        order = node.peers_in_order(rnd)
        if sender not in order:
            return f"{sender} is not a current member"
        k = order.index(sender)
        if k == 0 or time.monotonic() - node.round_started >= (k - 0.5) * self.slot:
            return None
        ahead = [n for n in order[:k] if n != node.me]
        if node.me in order[:k] and self._leading == rnd:
            return f"{sender} ranks {k + 1} for round {rnd}, but this node ranks before it and is leading"
        reachable = node.network.probe(ahead, timeout=1.0)
        alive = [n for n in ahead if reachable.get(n)]
        if alive:
            return f"{sender} ranks {k + 1} for round {rnd}, but {alive[0]} ranks before it and is reachable"
        return None

    # main loops -----------------------------------------------------------------------------------
    def loop(self) -> None:
        node = self.node
        if node.topology == "star" and node.me == node.roster.aggregator:
            self._gather()
            try:
                self._star_lead()
            finally:
                node.driver.flush()
        elif node.topology == "star":
            node.catch_up()
            self._follow()
        else:
            node.catch_up()
            self._gather()
            self._swarm()
        self._finish()

    def _finish(self) -> None:
        node = self.node
        if node.finished:
            node.set_phase("finished")
            if node.stopped_early is not None:
                log.info("%s: the run stopped after round %d: %s", node.me, node.progress.round, node.stopped_early)
            else:
                log.info("%s: the job's %d rounds are committed", node.me, node.spec.federation.rounds)
        if node.exit_when_finished and node.finished:
            node.stopping.wait(2.0)
            return
        node.stopping.wait()

    def _gather(self) -> None:
        node = self.node
        others = [n for n in sorted(node.roster.current) if n != node.me]
        end = time.monotonic() + node.settings.gather_timeout
        while others and not node.stopping.is_set():
            health = node.network.probe(others, timeout=1.0)
            missing = [n for n in others if not health.get(n)]
            if not missing:
                return
            if time.monotonic() >= end:
                log.warning("starting without %d unreachable member(s): %s", len(missing), ", ".join(missing[:5]))
                return
            node.stopping.wait(0.2)

    def _star_lead(self) -> None:
        node = self.node
        while not node.stopping.is_set() and not node.finished:
            if not self.lead(node.progress.round + 1):
                node.stopping.wait(node.settings.probe_interval)

    def _follow(self) -> None:
        node = self.node
        while not node.stopping.is_set() and not (node.finished and node.exit_when_finished):
            rnd = node.progress.round + 1
            if node.wait_commit(rnd, timeout=node.settings.probe_interval):
                continue
            behind = time.monotonic() - node.round_started > self.slot
            if node.catchup_wanted.is_set() or (behind and not node.finished):
                node.catch_up()

    def _swarm(self) -> None:
        node = self.node
        led: dict[int, float] = {}
        while not node.stopping.is_set() and not node.finished:
            rnd = node.progress.round + 1
            order = node.peers_in_order(rnd)
            elapsed = time.monotonic() - node.round_started
            unreachable = [n != node.me and not node.network.reachable(n) for n in order]
            k = takeover_rank(elapsed, slot=self.slot, unreachable_before=unreachable) % len(order)
            leader = order[k]
            if leader == node.me and time.monotonic() - led.get(rnd, -1e9) > node.settings.probe_interval:
                if k > 0:
                    log.warning("round %d: taking over as leader (rank %d; %s did not deliver)", rnd, k + 1, order[0])
                led[rnd] = time.monotonic()
                if not self.lead(rnd):
                    led[rnd] = time.monotonic()
                continue
            if node.wait_commit(rnd, timeout=node.settings.probe_interval):
                continue
            if leader != node.me:
                node.network.probe([leader], timeout=1.0)
            if node.catchup_wanted.is_set():
                node.catch_up()

    # extensions -----------------------------------------------------------------------------------
    def restore_extension_state(self, progress: Progress) -> None:
        """Load the extensions' server state of the commit of ``progress`` (the initial state before round 1).

        Raises
        ------
        ConfigurationError
            The commit's state does not fit this node's extensions (another privacy or robustness setup).
        """
        data = self._initial_state
        if progress.commit:
            body = open_body(pb.Envelope.FromString(bytes.fromhex(progress.commit)), pb.Commit)
            data = body.extension_state or self._initial_state
        states = canonical.decode(data) if data else {}
        load_extension_states(self.extensions, states if isinstance(states, dict) else {})

    def _state_bytes(self) -> bytes:
        """Canonical JSON of the extensions' server state (empty when no extension keeps state)."""
        states = extension_states(self.extensions)
        return canonical.encode(states) if states else b""

    def _after_round(self, outcome: RoundOutcome) -> str | None:
        """Every extension's ``after_round`` (annotations on ``outcome``); the first reason to stop, if any."""
        stop: str | None = None
        for ext in self.extensions:
            reason = ext.after_round(outcome, model=outcome.parameters)
            if reason and stop is None:
                stop = reason
        return stop

    # leading a round ------------------------------------------------------------------------------
    def lead(self, rnd: int) -> bool:
        """Coordinate round ``rnd`` and commit it; ``False`` if it was aborted or overtaken."""
        node = self.node
        spec = node.spec
        if node.refuses_to_lead():  # its ledger raised an alarm
            return False
        self._attempt += 1
        self._leading = rnd
        started_ms = int(time.time() * 1000)
        node.set_phase("leading")
        try:
            progress = node.progress
            params = node.store.parameters(progress.model_digest)
            if self._held != (progress.round, progress.model_digest):  # else: this node committed it, state in hand
                self.strategy.load_state_dict(dict(node.store.parameters(progress.state_digest)))
                self.restore_extension_state(progress)
            self._held = None  # the round changes the state
            candidates = np.asarray(
                [m for m in node.roster.current_ids() if node.network.reachable(node.roster.name_of(m))], dtype=np.int64
            )
            is_last = rnd == spec.federation.rounds
            gen = self.coordinator.run_round(
                rnd,
                params,
                candidates=candidates,
                evaluate=(rnd % spec.evaluation.every == 0) or is_last,
                evaluate_all=is_last,
            )
            base_size = node.store.size(progress.model_digest)
            outcome, digests = node.driver.drive(
                gen, attempt=self._attempt, base_digest=progress.model_digest, base_size=base_size, base=params
            )
        except RoundAborted as exc:
            log.warning("round %d aborted: %s", rnd, exc)
            node.set_error(str(exc))
            node.driver.outbox.release_all()
            return False
        except FedswarmError as exc:
            log.error("round %d failed: %s", rnd, exc)
            node.set_error(str(exc))
            node.driver.outbox.release_all()
            return False
        finally:
            self._leading = None
            node.set_phase("idle")
            node.driver.flush()  # a held commit that did not go out with this round's fit assignments
        if node.progress.round >= rnd:
            log.warning("round %d: committed by another leader meanwhile; dropping this attempt", rnd)
            node.driver.outbox.release_all()
            return False
        stop = self._after_round(outcome)
        last = stop is not None or rnd >= spec.federation.rounds
        store = node.store
        model = tensor_codec.encode(outcome.parameters)
        state = tensor_codec.encode(Parameters(self.strategy.state_dict()))
        limit = inline_limit(node.settings.chunk_bytes)
        model_digest, model_size = store.put_staged(model, limit=limit), len(model)  # written by apply_commit
        state_digest, state_size = store.put_staged(state, limit=limit), len(state)
        record = outcome_record(outcome, leader=node.me, model_digest=model_digest, started_ms=started_ms)
        if stop is not None:
            record["stopped_early"] = stop
            log.warning("round %d: the run stops after this round: %s", rnd, stop)
        run_summary: dict[str, object] = {}
        if last:
            for ext in self.extensions:
                run_summary.update(ext.summary())
            if run_summary:
                record["extensions"] = run_summary
        inline_model = model_size <= limit
        inline_state = state_size + (model_size if inline_model else 0) <= limit
        body = pb.Commit(
            attempt=self._attempt,
            previous_digest=progress.model_digest,
            model_digest=model_digest,
            model_size=model_size,
            state_digest=state_digest,
            state_size=state_size,
            inputs=summarize_inputs(outcome, digests, node.roster.name_of),
            record_json=json.dumps(record, separators=(",", ":")),
            extension_state=self._state_bytes(),
        )
        if not node.ledger_entries(body, outcome, digests):  # the round's ledger entries (cannot record: abort)
            node.driver.outbox.release_all()
            return False
        envelope = node.network.seal(body, round=rnd)
        written = node.apply_commit(envelope, body, leader=node.me, background=True)  # waited for before sending
        if node.progress.round == rnd and node.progress.model_digest == model_digest:
            self._held = (rnd, model_digest)
        pending = PendingCommit(
            round=rnd,
            envelope=envelope,
            model=model if inline_model else b"",
            state=state if inline_state else b"",
            timeout=node.settings.rpc_timeout + (model_size + state_size) / 20e6,  # members may fetch blobs
            recipients=commit_recipients(sorted(node.roster.current), me=node.me, reachable=node.network.reachable),
            written=written,
        )
        if node.topology == "star" and not node.finished and not node.stopping.is_set():
            node.driver.hold(pending)  # goes out with the next round's fit assignments
        else:
            node.driver.send_commit(pending)
        for observer in node.observers:
            observer.on_round(outcome, model=outcome.parameters, model_digest=model_digest)
        if node.finished:
            summary = {"federation": spec.federation.name, "rounds": rnd, "final_model_digest": model_digest}
            summary.update(run_summary)
            if stop is not None:
                summary["stopped_early"] = stop
            for observer in node.observers:
                observer.on_finish(summary)
        return True
