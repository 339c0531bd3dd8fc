"""``fedswarm provision``: create a federation's CA and startup kits, admit and revoke members.

``fedswarm provision SPEC.toml --out DIR`` provisions every member the spec lists. Joining later
keeps the newcomer's private keys on its machine:

1. newcomer: ``fedswarm provision join-request KIT --name NAME --address HOST:PORT`` writes keys and
   ``KIT/join-request.json``;
2. operator: ``fedswarm provision add-member DIR KIT/join-request.json`` signs it, publishes a new
   manifest, updates the kits found in ``DIR`` and writes ``DIR/ca/admissions/NAME.json``;
3. newcomer: ``fedswarm provision complete-join KIT ADMISSION`` installs certificate and manifest.

``fedswarm provision revoke DIR NAME`` revokes a member (CRL and manifest); ``update-kit`` installs the
operator's latest publication into a kit on another machine.

Passwords never go on the command line: ``--ca-password-file`` (or ``FEDSWARM_CA_PASSWORD``) for the CA
key, ``--kit-password-file`` (or ``FEDSWARM_KIT_PASSWORD``) for kits; an existing encrypted key asks on a
terminal. A spec with ``privacy.secure_aggregation = "ckks"`` gets CKKS contexts in the kits (the secret
one sealed with the kit password, and never in a star topology aggregator's kit).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from fedswarm.cli.common import err_console, guarded
from fedswarm.cli.passwords import CA_PASSWORD_ENV, KIT_PASSWORD_ENV, ca_password, kit_password, new_password
from fedswarm.core.errors import ConfigurationError

__all__ = ["app"]


class _DefaultCreate(TyperGroup):
    """Runs ``create`` when the first argument is not a subcommand (``provision SPEC.toml --out DIR``)."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args.insert(0, "create")
        return super().resolve_command(ctx, args)


app = typer.Typer(
    name="provision", cls=_DefaultCreate, help="Create and manage a federation's PKI and kits.", no_args_is_help=True
)


def _publication(out: Path) -> Any:
    from fedswarm.crypto import pki
    from fedswarm.crypto.files import read_material
    from fedswarm.node.kit import CA_DIR, CA_FILE, CRL_FILE, SIGNATURE_FILE, Publication, SignedManifest

    ca = pki.Certificate.load(out / CA_DIR / CA_FILE)
    manifest = SignedManifest.from_bytes(read_material(out / CA_DIR / SIGNATURE_FILE), ca=ca)
    return Publication(ca, manifest, pki.RevocationList.load(out / CA_DIR / CRL_FILE))


_CA_PASSWORD_HELP = f"file holding the CA key's password (or set {CA_PASSWORD_ENV}; asked on a terminal)"
CaPasswordFile = Annotated[Path | None, typer.Option("--ca-password-file", help=_CA_PASSWORD_HELP)]


def _existing_ca_password(out: Path, file: Path | None) -> bytes | None:
    from fedswarm.node.kit import CA_DIR, CA_KEY_FILE

    return ca_password(out / CA_DIR / CA_KEY_FILE, file)


def _kit_passwords(values: list[str], members: list[str]) -> dict[str, bytes]:
    """``--kit-password-file`` values: ``PATH`` (every kit) or ``NAME=PATH`` (one kit, taking precedence)."""
    from fedswarm.crypto.files import read_password_file

    every: bytes | None = None
    one: dict[str, bytes] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if sep and name in members:
            one[name] = read_password_file(Path(path))
        elif sep and not Path(value).exists():
            raise ConfigurationError(f"--kit-password-file {value!r}: {name!r} is not a member {sorted(members)}")
        elif every is not None:
            raise ConfigurationError("--kit-password-file: give at most one PATH for every kit (and NAME=PATH for one)")
        else:
            every = read_password_file(Path(value))
    if every is None and not values:
        every = new_password(None, env=KIT_PASSWORD_ENV)
    passwords = {}
    for name in members:
        password = one.get(name, every)
        if password is not None:
            passwords[name] = password
    return passwords


def _update_local_kits(out: Path, publication: Any, *, skip: str | None = None) -> list[str]:
    from fedswarm.node.kit import SIGNATURE_FILE, update_kit

    updated = []
    for kit in sorted(p for p in out.iterdir() if p.is_dir() and (p / SIGNATURE_FILE).is_file() and p.name != "ca"):
        if kit.name == skip:
            continue
        update_kit(kit, publication)
        updated.append(kit.name)
    return updated


@app.command("create", hidden=True)
def create(
    spec: Annotated[Path, typer.Argument(help="federation spec (TOML)", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="output folder (must not hold a federation yet)")],
    validity_days: Annotated[int | None, typer.Option("--validity-days", help="member certificate lifetime")] = None,
    ca_password_file: Annotated[
        Path | None,
        typer.Option("--ca-password-file", help=f"encrypt the CA key with this file's password (or {CA_PASSWORD_ENV})"),
    ] = None,
    kit_password_files: Annotated[
        list[str] | None,
        typer.Option(
            "--kit-password-file",
            help=f"PATH: encrypt every kit with this file's password; NAME=PATH: one member's kit (repeatable; "
            f"default {KIT_PASSWORD_ENV} for every kit)",
        ),
    ] = None,
) -> None:
    """Create the CA and one kit per member of SPEC in OUT."""
    from fedswarm.node.provisioning import member_specs, provision_from_spec
    from fedswarm.spec.schema import load_spec

    def run() -> None:
        loaded, _ = load_spec(spec)
        names = [m.name for m in member_specs(loaded)]
        passwords = _kit_passwords(list(kit_password_files or []), names)
        result = provision_from_spec(
            loaded,
            out,
            validity_days=validity_days,
            ca_password=new_password(ca_password_file, env=CA_PASSWORD_ENV),
            kit_passwords=passwords,
        )
        err_console.print(f"CA: {result.ca_dir} (keep ca-key.pem private)")
        for name, kit in result.kits.items():
            entry = result.publication.manifest.manifest.member(name)
            locked = "encrypted" if name in passwords else "unencrypted"
            err_console.print(f"  {name:<20} {entry.role:<10} {entry.address:<22} kit {kit} ({locked})")
        if result.publication.manifest.manifest.ckks is not None:
            err_console.print("CKKS: public context in every kit; secret context in every kit but an aggregator's")

    guarded(run)


@app.command("join-request")
def join_request(
    kit: Annotated[Path, typer.Argument(help="the new member's kit folder (keys are created here)")],
    name: Annotated[str, typer.Option("--name", help="member name")],
    address: Annotated[str, typer.Option("--address", help="host:port where the node will listen")],
    role: Annotated[str, typer.Option("--role", help="member | aggregator")] = "member",
    password_file: Annotated[
        Path | None,
        typer.Option("--password-file", help=f"encrypt the new keys with this file's password (or {KIT_PASSWORD_ENV})"),
    ] = None,
) -> None:
    """Create the new member's keys and a signed join request (KIT/join-request.json)."""
    from fedswarm.node.kit import create_join_request

    def run() -> None:
        if role not in ("member", "aggregator"):
            raise ConfigurationError(f"--role: {role!r} is not 'member' or 'aggregator'")
        password = new_password(password_file, env=KIT_PASSWORD_ENV)
        request = create_join_request(kit, name=name, role=role, address=address, dns_names=(name,), password=password)  # type: ignore[arg-type]
        (kit / "join-request.json").write_bytes(request.to_bytes())
        err_console.print(f"send {kit / 'join-request.json'} to the operator")

    guarded(run)


@app.command("add-member")
def add_member(
    out: Annotated[Path, typer.Argument(help="the federation folder (with ca/)")],
    request: Annotated[Path, typer.Argument(help="join-request.json from the new member")],
    validity_days: Annotated[int, typer.Option("--validity-days")] = 365,
    ca_password_file: CaPasswordFile = None,
) -> None:
    """Admit a member: sign its request, publish the new manifest, update the kits in OUT.

    In a CKKS federation the admission carries the contexts, the secret one sealed to the newcomer's
    join key (only it can open the admission's secret).
    """
    from fedswarm.node.kit import JoinRequest
    from fedswarm.node.kit import add_member as admit

    def run() -> None:
        password = _existing_ca_password(out, ca_password_file)
        admission = admit(
            out, JoinRequest.from_bytes(request.read_bytes()), validity_days=validity_days, ca_password=password
        )
        folder = out / "ca" / "admissions"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{admission.certificate.name}.json"
        target.write_bytes(admission.to_bytes())
        spec = out / "ca" / "spec.toml"
        updated = _update_local_kits(out, admission.publication, skip=admission.certificate.name)
        err_console.print(f"admitted {admission.certificate.name}: send {target} (and {spec.name}) to it")
        err_console.print(f"updated kits: {', '.join(updated) or 'none'}; other kits need `provision update-kit`")

    guarded(run)


@app.command("complete-join")
def complete_join(
    kit: Annotated[Path, typer.Argument(help="the new member's kit folder")],
    admission: Annotated[Path, typer.Argument(help="the admission file from the operator")],
    spec: Annotated[Path | None, typer.Option("--spec", help="federation spec to copy into the kit")] = None,
    password_file: Annotated[
        Path | None,
        typer.Option(
            "--password-file", help=f"file holding the kit password (or {KIT_PASSWORD_ENV}; asked on a terminal)"
        ),
    ] = None,
) -> None:
    """Install the operator's admission (certificate, manifest, CKKS contexts) next to the member's keys."""
    from fedswarm.node.kit import Admission
    from fedswarm.node.kit import complete_join as install

    def run() -> None:
        password = kit_password(kit, password_file)
        done = install(kit, Admission.from_bytes(admission.read_bytes()), password=password)
        if spec is not None:
            shutil.copyfile(spec, kit / "spec.toml")
        err_console.print(f"kit of {done.name} ready (manifest version {done.manifest.version})")

    guarded(run)


@app.command("revoke")
def revoke(
    out: Annotated[Path, typer.Argument(help="the federation folder (with ca/)")],
    name: Annotated[str, typer.Argument(help="member to revoke")],
    ca_password_file: CaPasswordFile = None,
) -> None:
    """Revoke a member's certificate (CRL) and drop it from the manifest; update the kits in OUT."""
    from fedswarm.node.kit import revoke_member

    def run() -> None:
        publication = revoke_member(out, name, ca_password=_existing_ca_password(out, ca_password_file))
        updated = _update_local_kits(out, publication, skip=name)
        err_console.print(
            f"revoked {name} (CRL {publication.crl.number}); updated kits: {', '.join(updated) or 'none'}"
        )
        err_console.print("running nodes reload their kit within seconds; distribute ca/manifest.sig and ca/crl.pem")

    guarded(run)


@app.command("update-kit")
def update_kit_command(
    kit: Annotated[Path, typer.Argument(help="a member's kit folder")],
    publication: Annotated[Path, typer.Option("--from", help="the operator's federation folder (with ca/)")],
) -> None:
    """Install the operator's latest manifest and CRL into a kit (refusing rollbacks)."""
    from fedswarm.node.kit import update_kit

    guarded(lambda: update_kit(kit, _publication(publication)))
    err_console.print(f"{kit}: updated")


if __name__ == "__main__":
    app()
