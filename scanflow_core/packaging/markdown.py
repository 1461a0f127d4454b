"""The model card as Markdown: what a person reads beside the model."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["render_model_card"]


def _cell(value: Any) -> str:
    """A value for a Markdown table cell: pipes and newlines cannot break the table."""
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, dict | list):
        text = json.dumps(value, default=str)
    else:
        text = "—" if value is None else str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def render_model_card(card: Mapping[str, Any]) -> str:
    """The card as Markdown: what a person reads beside the model."""
    model, prov, infra = card["model"], card["provenance"], card["infrastructure"]
    lines = [f"# Model card: {_cell(card['name'])}", ""]
    if card.get("description"):
        lines += [_cell(card["description"]), ""]
    lines += [
        f"- model: `{model['path']}` ({model['format']}, {model['size']} bytes), `{model['digest']}`",
        f"- workflow `{prov['workflow']}`, run `{prov['run_id']}`, packaged by step `{prov['packaged_by']}`",
        f"- spec `{prov['spec']}`, `{prov['spec_digest']}`",
        f"- created {card['created_at']}",
    ]
    registry = card.get("registry")
    if registry:
        lines.append(f"- registered as `{registry.get('name')}` version {registry.get('version')}")
    lines += ["", "## Provenance", ""]
    attested = (
        "every upstream step is attested" if prov["attested"] else "not every upstream step is attested"
    )
    lines += [f"{attested}; check with `{prov['verify']}`.", ""]
    lines += _table(
        ["step", "stage", "status", "attestation digest"],
        [(s["name"], s["stage"], s["status"], s["attestation_digest"]) for s in prov["steps"]],
    )
    for title, key in (("Hyperparameters", "hyperparameters"), ("Metrics", "metrics")):
        lines += [f"## {title}", ""]
        rows = [(step, k, v) for step, values in card[key].items() for k, v in values.items()]
        lines += _table(["step", "name", "value"], rows) if rows else ["none recorded", ""]
    if card.get("objectives"):
        lines += ["## Objectives", ""]
        rows = [(o["name"], o["expr"], "met" if o["passed"] else "NOT met") for o in card["objectives"]]
        lines += _table(["objective", "expression", "result"], rows)
    lines += ["## Data", ""]
    data = [(d["artifact"], d["step"], d["size"], d["digest"]) for d in card["data"]]
    lines += _table(["artifact", "made by", "bytes", "digest"], data) if data else ["none upstream", ""]
    lines += ["## Signature", ""]
    for part in ("inputs", "outputs"):
        lines.append(f"- {part}: `{json.dumps(card['signature'].get(part), default=str)}`")
    lines += ["", "## Infrastructure", ""]
    needs = infra["resources"]
    lines += [
        f"- python {infra['python']} on {infra['platform']}, device {infra['device']}",
        f"- cpu {_cell(needs.get('cpu'))}, memory {_cell(needs.get('memory'))}, "
        f"gpu {_cell(needs.get('gpu'))}",
    ]
    lines += [f"- `{name}=={version}`" for name, version in infra["packages"].items()]
    return "\n".join(lines) + "\n"
