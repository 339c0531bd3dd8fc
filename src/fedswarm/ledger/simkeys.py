"""Signing keys of simulated members and coordinators, derived from the run's seed.

A simulation has no real parties, yet its ledger is signed entry by entry like a real one, so it can be
verified with the same code. Each simulated party's Ed25519 key is derived deterministically::

    seed32 = SHA-256(b"fedswarm-sim-member" || b"\\x00" || decimal(seed) || b"\\x00" || UTF-8(name))
    key    = Ed25519 private key whose RFC 8032 secret is seed32

with ``b"fedswarm-sim-coordinator"`` instead of ``b"fedswarm-sim-member"`` for the coordinator.

**These keys are not secret**: anyone who knows the seed (it is in the spec) can sign as any simulated
party. A simulated ledger proves that the recording and verification machinery works and detects
accidental or naive changes; it cannot show who produced it. Keys are derived lazily, on first use, so a
simulation of 100,000 members only derives the keys of members that actually act.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from fedswarm.crypto.signing import SigningKey

__all__ = ["SimulationKeys", "simulation_seed"]

_DOMAINS = {"member": b"fedswarm-sim-member", "coordinator": b"fedswarm-sim-coordinator"}


def simulation_seed(seed: int, name: str, *, role: Literal["member", "coordinator"] = "member") -> bytes:
    """The 32-byte Ed25519 secret of simulated party ``name`` in a run with ``seed``."""
    data = _DOMAINS[role] + b"\x00" + str(int(seed)).encode("ascii") + b"\x00" + name.encode("utf-8")
    return hashlib.sha256(data).digest()


class SimulationKeys:
    """Lazily derived, cached keys of the simulated parties of one run.

    Parameters
    ----------
    seed
        The run's seed (``federation.seed`` of the spec).
    coordinator
        Name of the coordinator.
    """

    __slots__ = ("_cache", "_coordinator", "_seed")

    def __init__(self, seed: int, *, coordinator: str = "coordinator") -> None:
        self._seed = int(seed)
        self._coordinator = coordinator
        self._cache: dict[str, SigningKey] = {}

    @property
    def coordinator_name(self) -> str:
        """Name of the coordinator."""
        return self._coordinator

    def coordinator(self) -> SigningKey:
        """The coordinator's key."""
        key = self._cache.get(self._coordinator)
        if key is None:
            key = SigningKey.from_seed(simulation_seed(self._seed, self._coordinator, role="coordinator"))
            self._cache[self._coordinator] = key
        return key

    def member(self, name: str) -> SigningKey:
        """The key of member ``name`` (derived on first use, then cached)."""
        key = self._cache.get(name)
        if key is None:
            if name == self._coordinator:
                return self.coordinator()
            key = SigningKey.from_seed(simulation_seed(self._seed, name))
            self._cache[name] = key
        return key

    def __len__(self) -> int:
        return len(self._cache)
