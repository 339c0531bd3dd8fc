"""The audit report of :func:`fedswarm.ledger.report.audit_report` as one self-contained HTML page.

The page loads nothing and runs nothing: tables of the federation, members, rounds (privately aggregated
rounds marked as such), checkpoints, anomalies, privacy and the largest metric shift, with the whole JSON
report embedded as a ``<script type="application/json">`` data block for tools.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["render_html"]

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#1b1f24;max-width:70rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}
table{border-collapse:collapse;font-size:.85rem}td,th{border:1px solid #d0d7de;padding:.25rem .5rem;text-align:left}
th{background:#f6f8fa}.ok{color:#1a7f37;font-weight:600}.bad{color:#cf222e;font-weight:600}
code{font-size:.8rem}.warn{color:#9a6700}
"""


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return html.escape(", ".join(f"{k}: {_plain(v)}" for k, v in value.items()) or "-")
    if value is None:
        return "-"
    return html.escape(str(value))


def _plain(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: Mapping[str, Any]) -> str:
    """A self-contained HTML page of an :func:`audit_report` (every value escaped)."""
    verified = report["verification"]
    status = (
        '<p class="ok">Verified: every entry, signature, Merkle node, checkpoint and object checks out.</p>'
        if verified["ok"]
        else f'<p class="bad">Verification FAILED: {html.escape(str(verified["error"]))}</p>'
    )
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Ledger audit: {html.escape(report['federation'])}</title><style>{_STYLE}</style></head><body>",
        f"<h1>Ledger audit: {html.escape(report['federation'])}</h1>",
        status,
    ]
    if verified["ok"]:
        parts.append(
            f"<p>{verified['entries']} entries, root <code>{html.escape(verified['root'])}</code>, "
            f"{verified['final_checkpoints']} of {len(verified['checkpoints'])} checkpoints final, "
            f"{verified['unwitnessed']} entries not yet witnessed, {verified['objects']} objects.</p>"
        )
        parts.extend(f'<p class="warn">{html.escape(w)}</p>' for w in verified["warnings"])
    created = report["created"]
    parts.append("<h2>Federation</h2>")
    parts.append(
        _table(["field", "value"], [[k, v] for k, v in created.items()] + [["final model", report["final_model"]]])
    )
    if report["privacy"]:
        parts.append("<h2>Privacy budget</h2>")
        parts.append(_table(list(report["privacy"]), [list(report["privacy"].values())]))
    parts.append("<h2>Rounds</h2>")
    parts.append(
        _table(
            [
                "round",
                "leader",
                "selected",
                "accepted",
                "inputs",
                "rejected",
                "dropouts",
                "model",
                "held-out",
                "members",
            ],
            [
                [
                    r["round"],
                    r["leader"],
                    r["selected"],
                    r["accepted"],
                    "aggregated privately" if r["private"] else "updates",
                    len(r["rejected"]),
                    len(r["dropouts"]),
                    (r["model"] or "")[:16],
                    r["metrics"],
                    r["members_metrics"],
                ]
                for r in report["rounds"]
            ],
        )
    )
    anomalies = [[r["round"], a["member"], a["action"], a["reason"]] for r in report["rounds"] for a in r["anomalies"]]
    if anomalies:
        parts.append("<h2>Anomalies</h2>")
        parts.append(_table(["round", "member", "action", "reason"], anomalies))
    if verified["ok"]:
        parts.append("<h2>Checkpoints</h2>")
        parts.append(
            _table(
                ["size", "root", "signer", "cosigners", "final"],
                [
                    [c["size"], c["root"][:16], c["signer"], f"{c['cosigners']}/{c['members']}", c["final"]]
                    for c in verified["checkpoints"]
                ],
            )
        )
    blamed = report["blame"]
    if blamed:
        parts.append(
            f"<h2>Largest shift of {html.escape(blamed['metric'])}</h2><p>From round {blamed['previous_round']} "
            f"({blamed['before']:.4g}) to round {blamed['round']} ({blamed['after']:.4g}).</p>"
        )
        if blamed["ties"]:
            pairs = ", ".join(
                f"round {t['previous_round']} to {t['round']} ({t['change']:+.4g})" for t in blamed["ties"]
            )
            parts.append(
                f"<p class='warn'>Tied with {len(blamed['ties'])} other shift(s) of the same size: {pairs}.</p>"
            )
        for private in blamed["private_rounds"]:
            norm = blamed["aggregate_norms"].get(str(private["round"]))
            step = f"; aggregate step norm {norm:.4g}" if isinstance(norm, float) else ""
            parts.append(
                f"<p>Round {private['round']}: {len(private['contributors'])} contributors "
                f"({html.escape(', '.join(private['contributors']))}), no per-contributor statistics{step}. "
                f"Why: {html.escape(private['reason'])}.</p>"
            )
        if blamed["contributors"]:
            parts.append(
                _table(
                    ["round", "member", "examples", "norm", "distance to aggregate", "cosine", "distance to mean"],
                    [
                        [
                            c["round"],
                            c["member"],
                            c["examples"],
                            c["norm"],
                            c["distance_to_aggregate"],
                            c["cosine_to_aggregate"],
                            c["distance_to_mean"],
                        ]
                        for c in blamed["contributors"]
                    ],
                )
            )
    embedded = json.dumps(report).replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
    parts.append(f"<script type='application/json' id='report'>{embedded}</script>")
    parts.append("</body></html>")
    return "".join(parts)
