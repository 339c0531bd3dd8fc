"""``fedswarm ledger``: verify, inspect, prove, audit and anchor a federation's ledger.

PATH is a ledger folder, a run directory written by ``fedswarm simulate``, a node's data folder (its
replica is ``DATA/ledger``), or a node's startup kit whose data folder is the default ``KIT/state``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from fedswarm.cli.common import err_console, fail, guarded
from fedswarm.core.errors import VerificationError
from fedswarm.ledger.audit import LineageStep, lineage, load_audit
from fedswarm.ledger.blame import Blame, blame
from fedswarm.ledger.merkle import leaf_hash, verify_inclusion
from fedswarm.ledger.report import (
    audit_report,
    blame_json,
    blame_text,
    describe,
    lineage_json,
    lineage_text,
)
from fedswarm.ledger.report_html import render_html
from fedswarm.ledger.store import DB_NAME, LedgerStore, find_ledger
from fedswarm.ledger.verify import VerifyReport, verify_ledger

__all__ = ["PROOF_FORMAT", "ledger_app"]

PROOF_FORMAT = "fedswarm/inclusion-proof/v1"

ledger_app = typer.Typer(
    name="ledger",
    help="Verify, inspect, prove, audit and anchor a federation's ledger.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _node_folder(path: Path) -> Path:
    """A node's startup kit stands for its default data folder (``KIT/state``) when that holds the ledger."""
    state = Path(path) / "state"
    return state if (state / "ledger" / DB_NAME).is_file() else path


PathArg = Annotated[
    Path,
    typer.Argument(
        help="ledger folder, run directory, node data folder or node kit", show_default=False, callback=_node_folder
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON on stdout")]


def _echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, sort_keys=False))


def _report_json(report: VerifyReport) -> dict[str, Any]:
    return {
        "ok": True,
        "ledger": str(report.folder),
        "federation": report.federation,
        "entries": report.entries,
        "root": report.root,
        "kinds": report.kinds,
        "rounds": report.rounds,
        "members": report.members,
        "checkpoints": len(report.checkpoints),
        "final_checkpoints": report.final_checkpoints,
        "unwitnessed": report.unwitnessed,
        "objects": report.objects,
        "models": report.models,
        "workers": report.workers,
        "seconds": round(report.seconds, 3),
        "warnings": list(report.warnings),
    }


@ledger_app.command("verify")
def verify_command(
    path: PathArg,
    anchored: Annotated[bool, typer.Option("--anchored", help="also check every root anchored on chain")] = False,
    rpc: Annotated[str | None, typer.Option("--rpc", help="JSON-RPC URL of the chain (default: embedded)")] = None,
    contract: Annotated[str | None, typer.Option("--contract", help="anchor contract address")] = None,
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="processes for signature checks")] = None,
    json_: JsonOpt = False,
) -> None:
    """Recompute the tree, check every record, signature, rule, checkpoint and stored model."""

    def run() -> dict[str, Any]:
        report = verify_ledger(path, workers=workers)
        out = _report_json(report)
        if anchored:
            from fedswarm.ledger.anchor import open_ledger_chain, verify_anchors

            chain = open_ledger_chain(path, rpc=rpc)
            statuses = verify_anchors(path, chain=chain, contract=contract)
            out["anchors"] = [{"index": s.index, "size": s.size, "root": s.root} for s in statuses]
        return out

    out = guarded(run)
    if json_:
        _echo_json(out)
        return
    typer.echo(
        f"OK {out['ledger']}: {out['entries']} entries, {out['rounds']} rounds, {out['members']} members, "
        f"root {out['root']}"
    )
    typer.echo(
        f"   {out['final_checkpoints']}/{out['checkpoints']} checkpoints final, {out['unwitnessed']} entries "
        f"unwitnessed, {out['objects']} objects checked, {out['seconds']} s on {out['workers']} worker(s)"
    )
    if "anchors" in out:
        typer.echo(f"   consistent with {len(out['anchors'])} anchored checkpoint(s)")
    for warning in out["warnings"]:
        err_console.print(f"[yellow]warning:[/] {warning}", markup=True)


@ledger_app.command("show")
def show_command(
    path: PathArg,
    round_: Annotated[int | None, typer.Option("--round", min=0, help="only entries of this round")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="at most this many entries")] = 1000,
    json_: JsonOpt = False,
) -> None:
    """List entries (optionally of one round): sequence number, kind, author and a summary."""

    def run() -> list[dict[str, Any]]:
        store = LedgerStore(find_ledger(path), readonly=True)
        try:
            rows = []
            for signed in store.select(round=round_):
                entry = signed.entry
                rows.append(
                    {
                        "seq": entry.seq,
                        "kind": entry.kind,
                        "author": entry.author,
                        "round": entry.round,
                        "summary": describe(entry),
                        "entry": json.loads(signed.message),
                    }
                )
                if len(rows) >= limit:
                    break
            return rows
        finally:
            store.close()

    rows = guarded(run)
    if json_:
        _echo_json(rows)
        return
    for row in rows:
        typer.echo(f"{row['seq']:>7}  {row['kind']:<20} {row['author']:<14} {row['summary']}")


@ledger_app.command("prove")
def prove_command(
    path: PathArg,
    entry: Annotated[int, typer.Option("--entry", min=0, help="sequence number of the entry")],
    size: Annotated[int | None, typer.Option("--size", min=1, help="tree size (default: latest checkpoint)")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="write the proof here instead of stdout")] = None,
) -> None:
    """Print an inclusion proof of an entry as JSON, checkable by anyone who holds the root."""

    def run() -> dict[str, Any]:
        store = LedgerStore(find_ledger(path), readonly=True)
        try:
            checkpoint = store.latest_checkpoint()
            n = size if size is not None else (checkpoint.head.size if checkpoint else store.size)
            if checkpoint is not None and checkpoint.head.size < entry + 1 and size is None:
                checkpoint, n = None, store.size
            if not entry < n <= store.size:
                raise VerificationError(f"entry {entry} is not in a tree of size {n} (the log has {store.size})")
            record = store.record(entry)
            signed = store.entry(entry)
            matching = next((c for c in reversed(store.checkpoints()) if c.head.size == n), None)
            return {
                "format": PROOF_FORMAT,
                "federation": store.federation,
                "index": entry,
                "size": n,
                "root": store.root(n).hex(),
                "leaf_hash": leaf_hash(record).hex(),
                "record": record.hex(),
                "kind": signed.entry.kind,
                "author": signed.entry.author,
                "proof": [h.hex() for h in store.inclusion_proof(entry, n)],
                "checkpoint": matching.to_json() if matching else None,
            }
        finally:
            store.close()

    proof = guarded(run)
    text = json.dumps(proof, indent=2) + "\n"
    if out is not None:
        out.write_text(text, encoding="utf-8")
        err_console.print(f"proof of entry {entry} in a tree of size {proof['size']} written to {out}")
    else:
        typer.echo(text, nl=False)


@ledger_app.command("check-proof")
def check_proof_command(
    file: Annotated[Path, typer.Argument(help="inclusion proof JSON from `fedswarm ledger prove`")],
    root: Annotated[str, typer.Option("--root", help="the Merkle root you trust (hex)")],
    size: Annotated[int | None, typer.Option("--size", help="the tree size of that root, if you know it")] = None,
) -> None:
    """Check an inclusion proof against a root obtained independently (a checkpoint, an anchor)."""

    def run() -> dict[str, Any]:
        try:
            proof: dict[str, Any] = json.loads(file.read_text(encoding="utf-8"))
            if proof.get("format") != PROOF_FORMAT:
                raise VerificationError(f"{file}: format {proof.get('format')!r} is not {PROOF_FORMAT!r}")
            index, n = int(proof["index"]), int(proof["size"])
            leaf = bytes.fromhex(proof["leaf_hash"])
            path_hashes = [bytes.fromhex(h) for h in proof["proof"]]
            trusted = bytes.fromhex(root)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise VerificationError(f"{file}: not a readable inclusion proof: {exc}") from None
        if size is not None and size != n:
            raise VerificationError(f"the proof is for a tree of size {n}, your root is for size {size}")
        if proof.get("record") is not None and leaf_hash(bytes.fromhex(proof["record"])) != leaf:
            raise VerificationError("the record in the proof does not hash to its leaf_hash")
        verify_inclusion(leaf, index, n, path_hashes, trusted)
        return proof

    proof = guarded(run)
    typer.echo(
        f"OK: entry {proof['index']} ({proof.get('kind', '?')} by {proof.get('author', '?')}) is in the log of "
        f"size {proof['size']} with root {root}"
    )


@ledger_app.command("lineage")
def lineage_command(
    path: PathArg,
    model: Annotated[str, typer.Option("--model", help="model digest (or a prefix of 8+ hex digits)")],
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="verify the ledger first")] = True,
    json_: JsonOpt = False,
) -> None:
    """The chain of rounds, inputs and contributors that produced a model."""

    def run() -> tuple[str, list[LineageStep]]:
        if verify:
            verify_ledger(path)
        log = load_audit(path)
        return log.created.initial_model, lineage(log, model)

    initial, steps = guarded(run)
    if json_:
        _echo_json(lineage_json(initial, steps))
        return
    for line in lineage_text(initial, steps):
        typer.echo(line)


def _blame_text(result: Blame) -> None:
    for line in blame_text(result):
        typer.echo(line)
    if result.contributors and not any(c.retained for c in result.contributors):
        err_console.print("[yellow]note:[/] updates were not retained: distances are unavailable", markup=True)


@ledger_app.command("blame")
def blame_command(
    path: PathArg,
    metric: Annotated[str, typer.Option("--metric", help="evaluated metric: accuracy, loss, ...")] = "accuracy",
    scope: Annotated[
        str | None, typer.Option("--scope", help="central (held-out set) or members (default: central if evaluated)")
    ] = None,
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="verify the ledger first")] = True,
    json_: JsonOpt = False,
) -> None:
    """The round where a metric shifted most, with each contributor's update statistics."""
    if scope not in (None, "central", "members"):
        fail(f"--scope must be central or members, not {scope!r}", 2)
    chosen: Literal["central", "members"] | None = "central" if scope == "central" else "members" if scope else None

    def run() -> Blame:
        if verify:
            verify_ledger(path)
        return blame(load_audit(path), metric=metric, scope=chosen)

    result = guarded(run)
    if json_:
        _echo_json(blame_json(result))
    else:
        _blame_text(result)


@ledger_app.command("export")
def export_command(
    path: PathArg,
    format_: Annotated[str, typer.Option("--format", help="json or html")] = "json",
    out: Annotated[Path | None, typer.Option("--out", help="write here instead of stdout")] = None,
) -> None:
    """An audit report: verification outcome, federation, rounds, checkpoints, anomalies, blame."""
    if format_ not in ("json", "html"):
        fail(f"--format must be json or html, not {format_!r}", 2)

    def run() -> str:
        error: str | None = None
        report: VerifyReport | None = None
        try:
            report = verify_ledger(path)
        except VerificationError as exc:
            error = str(exc)
        data = audit_report(load_audit(path), report, error=error)
        return json.dumps(data, indent=2) + "\n" if format_ == "json" else render_html(data)

    text = guarded(run)
    if out is not None:
        out.write_text(text, encoding="utf-8")
        err_console.print(f"{format_} report written to {out}")
    else:
        typer.echo(text, nl=False)


@ledger_app.command("anchor")
def anchor_command(
    path: PathArg,
    rpc: Annotated[str | None, typer.Option("--rpc", help="JSON-RPC URL of the chain (default: embedded)")] = None,
    contract: Annotated[
        str | None, typer.Option("--contract", help="anchor contract address (default: deploy)")
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Verify the ledger, then anchor its latest checkpoint (and member keys) on chain."""

    def run() -> dict[str, Any]:
        from fedswarm.ledger.anchor import anchor_ledger, open_ledger_chain, verify_anchors

        verify_ledger(path)
        chain = open_ledger_chain(path, rpc=rpc)
        status = anchor_ledger(path, chain=chain, contract=contract)
        verify_anchors(path, chain=chain, contract=contract)
        return {
            "target": rpc or "embedded",
            "chain_id": chain.chain_id,
            "index": status.index,
            "size": status.size,
            "root": status.root,
        }

    result = guarded(run)
    if json_:
        _echo_json(result)
        return
    typer.echo(
        f"anchored checkpoint #{result['index']} (size {result['size']}, root {result['root']}) on "
        f"{result['target']} chain {result['chain_id']}"
    )
    if rpc is None:
        err_console.print(
            "[yellow]note:[/] the embedded chain is saved in the ledger folder (anchors.json): it checks the "
            "machinery, not against someone who can rewrite that folder. Use --rpc for a chain others hold.",
            markup=True,
        )
