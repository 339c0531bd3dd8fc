"""Who is in the federation, as a running node sees it: names, member ids, addresses, keys, trust.

The round engine numbers members ``0 .. n-1``; on the network they are names from the CA-signed
manifest. Member ``i`` is the ``i``-th name of the spec's ``network.names`` (default ``member-0000i``),
so a node's id, and therefore its partition of a spec-built dataset and its per-round seeds, are the
ones a simulation of the same spec uses. Members admitted later (``provision add-member``) follow in
name order. Revoked members keep their id (nothing is renumbered) but are no longer current.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fedswarm.core.errors import SpecError
from fedswarm.node.kit import Kit, Manifest
from fedswarm.spec.schema import Spec
from fedswarm.transport.tls import TlsMaterial, Trust

__all__ = ["Roster", "tls_material", "trust_from_kit"]


@dataclass(frozen=True)
class Roster:
    """Member ids, names and roles of a federation."""

    names: tuple[str, ...]
    current: frozenset[str]
    addresses: Mapping[str, str]
    aggregator: str | None

    @classmethod
    def build(cls, manifest: Manifest, spec: Spec) -> Roster:
        """Combine the spec's member order with the manifest's members.

        Raises
        ------
        SpecError
            ``network.names`` does not match ``federation.members``.
        """
        try:
            names = spec.network.member_names(spec.federation.members)
        except ValueError as exc:
            raise SpecError("network.names", str(exc)) from None
        listed = {e.name: e for e in manifest.members}
        extra = sorted(n for n in listed if n not in set(names))
        ordered = (*names, *extra)
        aggregators = sorted(e.name for e in manifest.members if e.role == "aggregator")
        aggregator = aggregators[0] if aggregators else None
        if aggregator is None and spec.network.aggregator < len(ordered) and ordered[spec.network.aggregator] in listed:
            aggregator = ordered[spec.network.aggregator]
        return cls(
            names=tuple(ordered),
            current=frozenset(listed),
            addresses={n: e.address for n, e in listed.items()},
            aggregator=aggregator,
        )

    @property
    def population(self) -> int:
        return len(self.names)

    def id_of(self, name: str) -> int:
        """The member id of ``name`` (``KeyError`` for a stranger)."""
        return self.names.index(name)

    def name_of(self, member: int) -> str:
        """The name of member id ``member`` (``member-#####`` beyond the roster)."""
        return self.names[member] if 0 <= member < len(self.names) else f"member-{member:05d}"

    def current_ids(self) -> list[int]:
        """Ids of the members the manifest lists now, ascending."""
        return [i for i, n in enumerate(self.names) if n in self.current]


def trust_from_kit(kit: Kit) -> Trust:
    """The trust state a verified kit establishes."""
    manifest = kit.manifest
    return Trust(
        federation_id=manifest.federation_id,
        ca=kit.ca_certificate,
        crl=kit.crl,
        fingerprints={e.name: e.tls_fingerprint for e in manifest.members},
        keys={e.name: e.verify_key() for e in manifest.members},
        addresses={e.name: e.address for e in manifest.members},
        version=manifest.version,
    )


def tls_material(kit: Kit) -> TlsMaterial:
    """PEM material for gRPC credentials (the TLS key is decrypted in memory only)."""
    return TlsMaterial(
        ca_pem=kit.ca_certificate.pem, cert_pem=kit.tls_certificate.pem, key_pem=kit.tls_key.to_pem(password=None)
    )
