"""A node's view of its peers: one channel each, who is reachable, and signed calls to them.

Reachability is learned, not polled in sweeps: a failed call marks a peer unreachable, any message
from it (or a successful call) marks it reachable again, and a background thread re-probes only the
peers currently marked unreachable (the standard gRPC health check) every ``probe_interval``.

Calls to many peers at once (a coordinator's assignments and commits) run as blocking calls on one
persistent pool of threads (:meth:`Network.call_each`, or :meth:`Network.call_each_async` when the caller
only needs to hear about failures): no thread is started per call or per round.
Calls to this node itself go through its loopback client (:mod:`fedswarm.transport.loopback`), with the
same checks and without a socket.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.message import Message

from fedswarm.crypto.signing import SigningKey
from fedswarm.spec.network import NetworkSpec
from fedswarm.transport._generated.fedswarm.v1 import federation_pb2 as pb
from fedswarm.transport.client import PeerClient, PeerError
from fedswarm.transport.envelope import SealedHere, seal
from fedswarm.transport.tls import TlsMaterial

__all__ = ["Network", "PeerHealth"]

log = logging.getLogger("fedswarm.node")

T = TypeVar("T")


@dataclass
class PeerHealth:
    reachable: bool = True
    last_seen: float = 0.0
    last_error: str = ""
    failures: int = 0


class Network:
    """Channels to every other member, reachability, and envelope sealing for this node."""

    def __init__(
        self,
        *,
        me: str,
        key: SigningKey,
        federation_id: str,
        material: TlsMaterial,
        addresses: Mapping[str, str],
        settings: NetworkSpec,
    ) -> None:
        self.me = me
        self.federation_id = federation_id
        self.settings = settings
        self._key = key
        self._material = material
        self._addresses = dict(addresses)
        self._clients: dict[str, PeerClient] = {}
        self._loopback: PeerClient | None = None
        self._health: dict[str, PeerHealth] = {}
        self._lock = threading.Lock()
        self._pool = cf.ThreadPoolExecutor(max_workers=8, thread_name_prefix="probe")
        self._calls = cf.ThreadPoolExecutor(max_workers=max(8, min(64, len(addresses))), thread_name_prefix="call")
        self._stop = threading.Event()
        self._prober = threading.Thread(target=self._reprobe_loop, name="reprobe", daemon=True)
        self.on_ack: Callable[[str, pb.Ack], None] | None = None  # sees the replies of calls made with call_each
        self.sealed = SealedHere()  # what this node signed: its verifier need not check those signatures again

    def start(self) -> None:
        self._prober.start()

    def close(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._calls.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()

    # identity -------------------------------------------------------------------------------------
    def seal(self, body: Message, *, round: int) -> pb.Envelope:
        """Sign ``body`` as this node for ``round``."""
        envelope = seal(body, key=self._key, sender=self.me, federation_id=self.federation_id, round=round)
        return self.sealed.remember(envelope)

    def set_loopback(self, client: PeerClient) -> None:
        """Route calls to this node itself through ``client`` (see :func:`fedswarm.transport.loopback.loopback_client`)."""
        with self._lock:
            self._loopback = client

    def set_addresses(self, addresses: Mapping[str, str]) -> None:
        """Install the addresses of a reloaded manifest (channels to moved or removed peers are closed)."""
        with self._lock:
            for name, client in list(self._clients.items()):
                if addresses.get(name) != client.address:
                    client.close()
                    del self._clients[name]
            self._addresses = dict(addresses)

    # channels -------------------------------------------------------------------------------------
    def client(self, name: str) -> PeerClient:
        with self._lock:
            if name == self.me and self._loopback is not None and name in self._addresses:
                return self._loopback
            client = self._clients.get(name)
            if client is None:
                address = self._addresses.get(name)
                if address is None:
                    raise KeyError(f"{name!r} is not a current member")
                s = self.settings
                client = PeerClient(
                    name,
                    address,
                    self._material,
                    max_message_bytes=s.max_message_bytes,
                    keepalive_seconds=s.keepalive,
                )
                self._clients[name] = client
            return client

    def call_each(
        self, names: Iterable[str], call: Callable[[PeerClient], T], *, method: str
    ) -> dict[str, T | PeerError]:
        """Run ``call`` on the client of every peer in ``names`` at once and wait for all of them.

        Returns each peer's result, or the :class:`PeerError` its call raised (``NOT_FOUND`` for a name
        that is not a current member). Peers that answer are marked reachable, those that cannot be
        reached unreachable.
        """
        futures = {name: self._calls.submit(self._one, name, call, method) for name in names}
        return {name: future.result() for name, future in futures.items()}

    def call_each_async(
        self,
        names: Iterable[str],
        call: Callable[[PeerClient], T],
        *,
        method: str,
        on_done: Callable[[str, T | PeerError], None],
    ) -> None:
        """Like :meth:`call_each`, without waiting: ``on_done(name, result)`` runs as each call ends."""

        def run(name: str) -> None:
            on_done(name, self._one(name, call, method))

        for name in names:
            self._calls.submit(run, name)

    def _one(self, name: str, call: Callable[[PeerClient], T], method: str) -> T | PeerError:
        try:
            result = call(self.client(name))
        except KeyError as exc:
            return PeerError(name, method, "NOT_FOUND", str(exc))
        except PeerError as exc:
            if exc.unreachable:
                self.mark(name, ok=False, error=exc.detail)
            return exc
        except Exception as exc:  # a bug must not leave the caller waiting for this peer until a deadline
            log.exception("%s to %s failed", method, name)
            return PeerError(name, method, "INTERNAL", f"{type(exc).__name__}: {exc}")
        self.mark(name, ok=True)
        if self.on_ack is not None and isinstance(result, pb.Ack):
            self.on_ack(name, result)
        return result

    # reachability ---------------------------------------------------------------------------------
    def mark(self, name: str, *, ok: bool, error: str = "") -> None:
        """Record the outcome of an interaction with ``name``."""
        with self._lock:
            health = self._health.setdefault(name, PeerHealth())
            was = health.reachable
            if ok:
                health.reachable, health.last_seen, health.failures = True, time.time(), 0
            else:
                health.failures += 1
                health.reachable, health.last_error = False, error
        if was != ok and name != self.me:
            log.info("%s is %s%s", name, "reachable again" if ok else "unreachable", "" if ok else f": {error}")

    def reachable(self, name: str) -> bool:
        """``False`` only for a peer known to be unreachable."""
        with self._lock:
            health = self._health.get(name)
            return health is None or health.reachable

    def probe(self, names: Iterable[str], *, timeout: float | None = None) -> dict[str, bool]:
        """Health-check ``names`` in parallel; updates reachability and returns it."""
        wanted = [n for n in names if n in self._addresses]
        limit = timeout if timeout is not None else min(2.0, self.settings.rpc_timeout)
        futures = {n: self._pool.submit(self._check, n, limit) for n in wanted}
        out: dict[str, bool] = {}
        for name, fut in futures.items():
            try:
                out[name] = fut.result(timeout=limit + 1.0)
            except (cf.TimeoutError, cf.CancelledError, RuntimeError):
                out[name] = False
        return out

    def _check(self, name: str, timeout: float) -> bool:
        if name == self.me:
            return True
        try:
            ok = self.client(name).healthy(timeout=timeout)
        except KeyError:
            return False
        self.mark(name, ok=ok, error="" if ok else "health check failed")
        return ok

    def _reprobe_loop(self) -> None:
        while not self._stop.wait(self.settings.probe_interval):
            with self._lock:
                down = [n for n, h in self._health.items() if not h.reachable and n in self._addresses]
            if down:
                try:
                    self.probe(down)
                except RuntimeError:  # the pool shut down while stopping
                    return

    def peer_states(self) -> list[pb.PeerState]:
        """Reachability of every peer, for the status report."""
        with self._lock:
            out = []
            for name, address in sorted(self._addresses.items()):
                if name == self.me:
                    continue
                h = self._health.get(name, PeerHealth())
                out.append(
                    pb.PeerState(
                        member=name,
                        address=address,
                        reachable=h.reachable,
                        last_seen_ms=int(h.last_seen * 1000),
                        last_error=h.last_error,
                    )
                )
            return out
