"""The run report as one self-contained HTML page: no script, no request to anywhere.

Pictures are embedded (PNG as base64 ``data:`` URLs, the lineage graph as inline SVG), the style sheet
is inline, and a Content-Security-Policy forbids scripts and every fetch but ``data:`` images. Every
text taken from the run (step names, messages, metrics, params) is HTML-escaped.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from scanflow_core.report.collect import Check, RunData

__all__ = ["render_html"]

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

#: Fill and outline of a step's box in the lineage graph, by status.
STATUS_COLOURS = {
    "succeeded": ("#e8f5e9", "#2e7d32"),
    "failed": ("#ffebee", "#c62828"),
    "upstream_failed": ("#fff3e0", "#ef6c00"),
    "skipped": ("#f5f5f5", "#9e9e9e"),
    "running": ("#e3f2fd", "#1565c0"),
    "not run": ("#fafafa", "#bdbdbd"),
}

STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2rem auto;
       max-width: 1200px; padding: 0 1rem; color: #212121; line-height: 1.4; }
h1 { margin-bottom: .2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #e0e0e0; }
code, .mono { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .85em; }
table { border-collapse: collapse; width: 100%; margin: .6rem 0; font-size: .9rem; }
th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid #eeeeee; vertical-align: top; }
th { background: #fafafa; }
.badges { display: flex; flex-wrap: wrap; gap: .5rem; margin: 1rem 0; }
.badge { padding: .25rem .6rem; border-radius: 1rem; font-size: .85rem; border: 1px solid; }
.ok, .pass, .succeeded, .met { color: #1b5e20; background: #e8f5e9; border-color: #a5d6a7; }
.fail, .failed, .not-met, .upstream_failed { color: #b71c1c; background: #ffebee; border-color: #ef9a9a; }
.warn, .skipped, .not-run, .running { color: #e65100; background: #fff3e0; border-color: #ffcc80; }
td.verdict, td.status { font-weight: bold; white-space: nowrap; }
.muted { color: #757575; } .note { color: #6d4c41; }
figure { display: inline-block; margin: .5rem 1rem .5rem 0; } figcaption { font-size: .85rem; }
.graph { overflow-x: auto; border: 1px solid #eeeeee; }
.graph svg { max-width: 100%; height: auto; }
td.time { white-space: nowrap; }
details summary { cursor: pointer; }
"""


def _e(value: Any) -> str:
    """Any value as escaped HTML text."""
    return html.escape(_text(value), quote=True)


def _text(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str, sort_keys=True)
    return str(value)


def _css_class(value: str) -> str:
    return re.sub(r"[^a-z0-9_-]", "-", value.lower())


def _css_string(value: str) -> str:
    """A CSS string literal that cannot end the string or the ``<style>`` element."""
    return '"' + "".join(c if c.isalnum() or c in "._- " else f"\\{ord(c):x} " for c in value) + '"'


def _table(header: Sequence[str], rows: Iterable[str], css: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(rows)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _metrics(metrics: Mapping[str, Any]) -> str:
    return ", ".join(f"{_e(k)}={_e(v)}" for k, v in metrics.items()) or '<span class="muted">—</span>'


def render_html(data: RunData) -> str:
    """The report of ``data`` as an HTML document."""
    parts = [
        _header(data),
        _objectives(data),
        _steps(data),
        _checks(data),
        _plots(data),
        _lineage(data),
        _attestation(data),
        _model_cards(data),
        _run_details(data),
    ]
    title = f"Scanflow run {data.run_id} of {data.workflow}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{STYLE}{_graph_style(data)}</style></head>\n"
        f"<body>\n{''.join(parts)}\n"
        f'<footer class="muted"><p>Written by <code>scanflow report</code> on '
        f"{_e(datetime.now(UTC).isoformat(timespec='seconds'))}.</p></footer>\n</body></html>\n"
    )


def _header(data: RunData) -> str:
    manifest = data.manifest
    status = str(manifest.get("status") or "unknown")
    counts = {v: sum(c.verdict == v for c in data.checks) for v in ("pass", "warn", "fail")}
    met = sum(bool(o.get("passed")) for o in data.objectives)
    badges = [
        f'<span class="badge {_css_class(status)}" id="run-status">run {_e(status)}</span>',
        f'<span class="badge">{len(data.steps)} steps</span>',
        f'<span class="badge {"fail" if counts["fail"] else "warn" if counts["warn"] else "ok"}">'
        f"checks: {counts['pass']} passed, {counts['warn']} warned, {counts['fail']} failed</span>",
    ]
    if data.objectives:
        css = "ok" if met == len(data.objectives) else "fail"
        badges.append(f'<span class="badge {css}">objectives: {met} of {len(data.objectives)} met</span>')
    verified = data.verification is not None and data.verification.ok
    badges.append(
        f'<span class="badge {"ok" if verified else "fail"}">'
        f"attestations {'verified' if verified else 'NOT verified'}</span>"
    )
    duration = manifest.get("duration_s")
    when = f"started {_e(manifest.get('started_at'))}"
    when += f", took {_e(float(duration))} s" if isinstance(duration, int | float) else ""
    notes = "".join(f'<p class="note">{_e(n)}</p>' for n in data.notes)
    return (
        f"<header><h1>{_e(data.workflow)}</h1>"
        f'<p class="muted">run <code id="run-id">{_e(data.run_id)}</code> · {when} · '
        f"<code>{_e(data.directory)}</code></p>"
        f'<div class="badges">{"".join(badges)}</div>{notes}</header>\n'
    )


def _objectives(data: RunData) -> str:
    if not data.objectives:
        return '<section id="objectives"><h2>Objectives</h2><p class="muted">none judged</p></section>\n'
    rows = []
    for o in data.objectives:
        passed = bool(o.get("passed"))
        verdict = "met" if passed else "NOT met"
        blocking = "" if o.get("blocking", True) else ' <span class="muted">(not blocking)</span>'
        observed = _metrics(o.get("observed") or {})
        reason = f"<br><span class='note'>{_e(o['reason'])}</span>" if o.get("reason") else ""
        rows.append(
            f'<tr class="objective" data-objective="{_e(o.get("name"))}">'
            f"<td>{_e(o.get('name'))}{blocking}</td><td><code>{_e(o.get('expr'))}</code></td>"
            f'<td class="verdict {"met" if passed else "not-met"}">{verdict}</td>'
            f"<td>{observed}{reason}</td></tr>"
        )
    table = _table(["objective", "expression", "result", "observed"], rows)
    return f'<section id="objectives"><h2>Objectives</h2>{table}</section>\n'


def _steps(data: RunData) -> str:
    rows = []
    for name, record in data.steps.items():
        status = str(record.get("status") or "unknown")
        duration = record.get("duration_s")
        shown = f"{float(duration):.2f} s" if isinstance(duration, int | float) else "—"
        checks = record.get("checks")
        checks = checks if isinstance(checks, dict) else {}
        summary = ", ".join(f"{n} {k}" for k, n in checks.items() if n) or "—"
        reason = record.get("reason")
        detail = f"<br><span class='note'>{_e(reason)}</span>" if reason else ""
        rows.append(
            f'<tr class="step" data-step="{_e(name)}"><td><code>{_e(name)}</code></td>'
            f"<td>{_e(record.get('stage'))}</td>"
            f'<td class="status {_css_class(status)}">{_e(status)}</td><td class="time">{shown}</td>'
            f"<td>{_metrics(record.get('metrics') or {})}{detail}</td><td>{_e(summary)}</td></tr>"
        )
    table = _table(["step", "stage", "status", "time", "metrics", "checks"], rows)
    return f'<section id="steps"><h2>Steps</h2>{table}</section>\n'


def _check_row(check: Check) -> str:
    return (
        f'<tr class="check {check.verdict}" data-step="{_e(check.step)}" data-check="{_e(check.label)}">'
        f"<td><code>{_e(check.step)}</code></td><td>{_e(check.label)}</td><td>{_e(check.target)}</td>"
        f"<td>{_e(check.phase)}</td>"
        f'<td class="verdict {check.verdict}">{check.verdict}</td>'
        f"<td>{_e(check.summary)}<br><span class='muted'>{_metrics(check.metrics)}</span></td></tr>"
    )


def _checks(data: RunData) -> str:
    if not data.checks:
        return '<section id="checks"><h2>Checks</h2><p class="muted">no checks ran</p></section>\n'
    table = _table(["step", "check", "on", "phase", "verdict", "message"], map(_check_row, data.checks))
    return f'<section id="checks"><h2>Checks</h2>{table}</section>\n'


def _plots(data: RunData) -> str:
    if not data.plots:
        return ""
    figures = []
    for plot in data.plots:
        if plot.data:
            image = f'<img alt="{_e(plot.title)}" src="data:image/png;base64,{plot.data}">'
        else:
            image = f'<p class="note">{_e(plot.path)}: {_e(plot.note)}</p>'
        figures.append(
            f'<figure class="plot" data-step="{_e(plot.step)}">{image}'
            f"<figcaption>{_e(plot.title)} <code>{_e(plot.path)}</code></figcaption></figure>"
        )
    return f'<section id="plots"><h2>Drift and check plots</h2>{"".join(figures)}</section>\n'


def _graph_style(data: RunData) -> str:
    """Colour each step's box in the inline lineage SVG by the step's status."""
    rules = []
    for name, record in data.steps.items():
        fill, line = STATUS_COLOURS.get(str(record.get("status")), STATUS_COLOURS["not run"])
        rules.append(
            f"#lineage g.step[data-step={_css_string(name)}] rect {{ fill: {fill}; stroke: {line}; }}"
        )
    return "\n".join(rules)


def _lineage(data: RunData) -> str:
    graph = (
        f'<div class="graph">{data.lineage_svg}</div>'
        if data.lineage_svg
        else '<p class="note">no graph: see below</p>'
    )
    legend = " ".join(
        f'<span class="badge" style="background:{fill};border-color:{line}">{_e(status)}</span>'
        for status, (fill, line) in STATUS_COLOURS.items()
    )
    rows = [
        f'<tr class="artifact" data-artifact="{_e(a.name)}"><td><code>{_e(a.name)}</code></td>'
        f"<td>{_e(a.kind)}</td><td><code>{_e(a.step)}</code></td>"
        f"<td>{_e(', '.join(a.read_by) or '—')}</td><td>{_e(a.size)}</td>"
        f'<td class="mono">{_e(a.digest[:19] + "…" if len(a.digest) > 20 else a.digest)}</td></tr>'
        for a in data.artifacts
    ]
    table = _table(["artifact", "kind", "made by", "read by", "bytes", "digest"], rows)
    return (
        f'<section id="lineage"><h2>Lineage</h2><p class="muted">{_e(data.lineage_note)}</p>'
        f'<div class="badges">{legend}</div>{graph}{table}</section>\n'
    )


def _attestation(data: RunData) -> str:
    result = data.verification
    if result is None:
        body = f'<p id="verification" class="fail">not verified: {_e(data.verification_error)}</p>'
        return f'<section id="attestation"><h2>Attestations</h2>{body}</section>\n'
    statements = sum(f.ok for f in result.findings if f.kind == "signature")
    if result.ok:
        verdict = f"verified: {statements} signed statements, every subject and input digest matches"
    else:
        verdict = f"FAILED: {len(result.failures)} problem(s)"
    rows = []
    attested = result.steps()
    for step in [s for s in data.steps if s in attested] + [s for s in attested if s not in data.steps]:
        mine = [f for f in result.findings if f.step == step]
        failed = [f for f in mine if not f.ok]
        counts = {k: sum(f.ok for f in mine if f.kind == k) for k in ("signature", "subject", "chain")}
        outcome = "ok" if not failed else f"FAILED ({len(failed)})"
        rows.append(
            f'<tr class="attested" data-step="{_e(step)}"><td><code>{_e(step)}</code></td>'
            f"<td>{counts['signature']}</td><td>{counts['subject']}</td><td>{counts['chain']}</td>"
            f'<td class="verdict {"ok" if not failed else "fail"}">{_e(outcome)}</td></tr>'
        )
    problems = "".join(
        f"<li><code>{_e(f.step)}</code> <code>{_e(f.file)}</code>: {_e(f.reason)}</li>"
        for f in result.failures
    )
    notes = "".join(f'<p class="muted">{_e(n)}</p>' for n in result.notes)
    keys = ", ".join(result.keyids) or "—"
    return (
        f'<section id="attestation"><h2>Attestations</h2>'
        f'<p id="verification" class="{"ok" if result.ok else "fail"}">{_e(verdict)}</p>'
        f"{f'<ul class=problems>{problems}</ul>' if problems else ''}"
        f"{_table(['step', 'statements', 'subjects', 'inputs', 'result'], rows)}"
        f'<p class="muted">key {_e(keys)} · check again with '
        f"<code>scanflow verify {_e(data.directory)}</code></p>{notes}</section>\n"
    )


def _model_cards(data: RunData) -> str:
    if not data.model_cards:
        return ""
    blocks = []
    for card in data.model_cards:
        model, prov = card.get("model") or {}, card.get("provenance") or {}
        registry = card.get("registry") or {}
        metrics = card.get("metrics") or {}
        lines = [
            f"<li>model <code>{_e(model.get('path'))}</code> ({_e(model.get('format'))}, "
            f"{_e(model.get('size'))} bytes) <code>{_e(model.get('digest'))}</code></li>",
            f"<li>upstream steps attested: {_e(bool(prov.get('attested')))}</li>",
        ]
        if registry:
            crowned = " (the champion)" if registry.get("champion") else ""
            lines.append(f"<li>registered as <code>{_e(registry.get('uri'))}</code>{crowned}</li>")
        lines += [f"<li>{_e(step)}: {_metrics(values)}</li>" for step, values in metrics.items()]
        blocks.append(
            f'<div class="model-card" data-step="{_e(card["step"])}"><h3>{_e(card.get("name"))} '
            f"<span class='muted'>({_e(card['path'])})</span></h3><ul>{''.join(lines)}</ul></div>"
        )
    return f'<section id="model-cards"><h2>Model cards</h2>{"".join(blocks)}</section>\n'


def _run_details(data: RunData) -> str:
    manifest = data.manifest
    rows = [
        f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>"
        for k, v in (
            ("spec", manifest.get("spec")),
            ("spec digest", manifest.get("spec_digest")),
            ("params", manifest.get("params") or {}),
            ("orchestrator", manifest.get("orchestrator")),
            ("finished", manifest.get("finished_at")),
        )
    ]
    if data.tracking:
        rows.append(f"<tr><th>MLflow store</th><td>{_e(data.tracking.get('uri'))}</td></tr>")
        rows.append(f"<tr><th>MLflow run</th><td>{_e(data.tracking.get('parent_run_id'))}</td></tr>")
    return f'<section id="run"><h2>Run</h2><table>{"".join(rows)}</table></section>\n'
