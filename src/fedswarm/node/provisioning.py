"""Provision a federation from its spec: one startup kit per member, with the spec inside.

Member ``i`` is named by ``network.names`` (default ``member-0000i``), listens on
``network.host:network.base_port + i`` unless ports are given, and gets a certificate whose names are
its address host and its member name (peers dial it by name, see :mod:`fedswarm.transport.tls`). In
star topology the member ``network.aggregator`` gets the ``aggregator`` role. The resolved spec is written
into every kit as ``spec.toml``. A spec with ``privacy.secure_aggregation = "ckks"`` gets CKKS contexts
generated with its ``[privacy.ckks]`` parameters (:mod:`fedswarm.node.ckks_keys`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import tomli_w

from fedswarm.core.errors import ConfigurationError, SpecError
from fedswarm.node.kit import MemberSpec, Provisioned, Role, provision
from fedswarm.privacy.he.ckks import CKKSParams
from fedswarm.spec.schema import Spec

__all__ = ["SPEC_FILE", "ckks_params", "member_specs", "provision_from_spec", "write_spec"]

SPEC_FILE = "spec.toml"


def member_specs(spec: Spec, *, ports: Sequence[int] | None = None) -> list[MemberSpec]:
    """The members a spec describes, with their roles and addresses."""
    n = spec.federation.members
    net = spec.network
    try:
        names = net.member_names(n)
    except ValueError as exc:
        raise SpecError("network.names", str(exc)) from None
    if ports is None:
        if net.base_port == 0:
            raise ConfigurationError("network.base_port is 0: give explicit ports (fedswarm up picks free ones)")
        if net.base_port + n - 1 > 65535:
            raise SpecError("network.base_port", f"{net.base_port} + {n} members runs past port 65535")
        ports = [net.base_port + i for i in range(n)]
    if len(ports) != n:
        raise ConfigurationError(f"{len(ports)} ports for {n} members")
    if spec.federation.topology == "star" and net.aggregator >= n:
        raise SpecError("network.aggregator", f"{net.aggregator} is not a member id (0..{n - 1})")
    host = net.host
    shown = f"[{host}]" if ":" in host else host
    out = []
    for i, name in enumerate(names):
        role: Role = "aggregator" if spec.federation.topology == "star" and i == net.aggregator else "member"
        out.append(MemberSpec(name, role, f"{shown}:{ports[i]}", dns_names=(name,)))
    return out


def ckks_params(spec: Spec) -> CKKSParams | None:
    """The CKKS parameters to provision keys with, or ``None`` when the spec does not aggregate with CKKS."""
    if spec.privacy.secure_aggregation != "ckks":
        return None
    c = spec.privacy.ckks
    return CKKSParams(
        poly_modulus_degree=c.poly_modulus_degree, coeff_mod_bit_sizes=c.coeff_mod_bit_sizes, scale_bits=c.scale_bits
    )


def write_spec(spec: Spec, path: Path) -> None:
    """Write the resolved spec as TOML."""
    Path(path).write_text(tomli_w.dumps(spec.to_dict()), encoding="utf-8")


def provision_from_spec(
    spec: Spec,
    out_dir: Path,
    *,
    ports: Sequence[int] | None = None,
    validity_days: int | None = None,
    ca_password: bytes | None = None,
    kit_passwords: Mapping[str, bytes] | None = None,
) -> Provisioned:
    """Create the CA and every member's kit in ``out_dir`` (see the module docstring).

    ``ca_password`` and ``kit_passwords`` (by member name) encrypt the CA key and the kits' private keys
    and CKKS secret contexts, as in :func:`fedswarm.node.kit.provision`.
    """
    result = provision(
        member_specs(spec, ports=ports),
        federation_name=spec.federation.name,
        out_dir=Path(out_dir),
        validity_days=validity_days if validity_days is not None else spec.network.validity_days,
        ca_validity_days=max(3650, validity_days or spec.network.validity_days),
        ca_password=ca_password,
        kit_passwords=kit_passwords,
        ckks=ckks_params(spec),
    )
    for kit in result.kits.values():
        write_spec(spec, kit / SPEC_FILE)
    write_spec(spec, result.ca_dir / SPEC_FILE)
    return result
