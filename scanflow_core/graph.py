"""Pictures of a workflow's plan: Mermaid, Graphviz DOT, a standalone SVG and PNG.

Every format draws the flattened plan: one node per step (its name and stage, shaped or coloured
by stage family), one edge per dependency labelled with the artifacts that flow along it, nested
workflows as groups, and steps that only run under a ``when:`` condition marked with ``?`` and a
dashed outline. The SVG uses a small layered layout of its own (columns are ``plan.levels()``), so
nothing outside the standard library is needed; PNG uses Graphviz's ``dot`` or matplotlib when
either is installed.
"""

from __future__ import annotations

import html
import importlib
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scanflow_core.errors import ScanflowError

if TYPE_CHECKING:
    from scanflow_core.spec.models import Workflow
    from scanflow_core.spec.plan import Plan

__all__ = ["COLOURS", "FORMATS", "render", "stage_family", "to_dot", "to_mermaid", "to_png", "to_svg"]

#: The formats :func:`render` knows.
FORMATS = ("mermaid", "dot", "svg", "png")

#: Fill and outline colour of each stage family.
COLOURS = {
    "objectives": ("#ede7f6", "#5e35b1"),
    "data": ("#e3f2fd", "#1e88e5"),
    "model": ("#fff3e0", "#ef6c00"),
    "ops": ("#e8f5e9", "#2e7d32"),
}
_FAMILY = {"training": "model", "evaluation": "model", "test": "model", "packaging": "ops", "serving": "ops"}
_FAMILY |= {"monitoring": "ops", "logging": "ops", "objectives": "objectives"}
_MERMAID_SHAPES = dict(data=('(["', '"])'), model=('["', '"]'), ops=('{{"', '"}}'), objectives=('[/"', '"/]'))

BOX_W, BOX_H, GAP_Y, GROUP_HEAD, GROUP_PAD, MARGIN, TITLE_H = 180.0, 46.0, 18.0, 24.0, 12.0, 24.0, 48.0


def stage_family(stage: str) -> str:
    """The family of an MLSpec stage: ``data``, ``model`` (training, evaluation, test), ``ops``
    (packaging, serving, monitoring, logging) or ``objectives``."""
    return "data" if stage.startswith("data_") else _FAMILY.get(stage, "objectives")


@dataclass(frozen=True, slots=True)
class _Edge:
    source: str
    target: str
    artifacts: tuple[str, ...]


@dataclass
class _Graph:
    """What every format draws, computed once from the plan."""

    title: str
    plan: Plan
    edges: list[_Edge]
    members: dict[str, list[str]]  # group path ("" for the top workflow) → its own steps
    subgroups: dict[str, list[str]]  # group path → nested group paths, in plan order
    group_titles: dict[str, str]
    conditional: set[str]  # steps and groups that run only under a ``when:``

    def label(self, name: str) -> str:
        short = name.rsplit(".", 1)[-1]
        return f"{short} ?" if name in self.conditional else short


def _graph(workflow: Workflow) -> _Graph:
    plan: Plan = workflow.plan
    graph = _Graph(workflow.name, plan, [], {"": []}, {"": []}, {}, set())
    for step in plan:
        _add_group(graph, workflow, step.group)
        graph.members[step.group].append(step.name)
        if step.spec.when is not None or step.group in graph.conditional:
            graph.conditional.add(step.name)
        for need in dict.fromkeys(step.needs):
            made = (plan.artifacts[a] for a in dict.fromkeys(step.inputs.values()))
            graph.edges.append(_Edge(need, step.name, tuple(a.output for a in made if a.producer == need)))
    return graph


def _add_group(graph: _Graph, workflow: Workflow, group: str) -> None:
    """Register ``group`` and the groups around it, titled and marked from the steps that hold them."""
    if group in graph.members:
        return
    parent, _, last = group.rpartition(".")
    _add_group(graph, workflow, parent)
    holder_wf = workflow
    for part in parent.split(".") if parent else []:
        holder_wf = holder_wf.children[part]
    holder, nested = holder_wf.step(last), holder_wf.children[last]
    graph.members[group], graph.subgroups[group] = [], []
    graph.subgroups[parent].append(group)
    graph.group_titles[group] = last if nested.name == last else f"{last} ({nested.name})"
    if holder.when is not None or parent in graph.conditional:
        graph.conditional.add(group)
        graph.group_titles[group] += " ?"


def _safe_ids(names: list[str], prefix: str) -> dict[str, str]:
    """Identifiers Mermaid accepts (letters, digits, ``_``), one per name, never two alike."""
    ids: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        base = prefix + re.sub(r"\W", "_", name.replace(".", "__"))
        candidate, n = base, 2
        while candidate in used:
            candidate, n = f"{base}_{n}", n + 1
        ids[name] = candidate
        used.add(candidate)
    return ids


def _mermaid_text(text: str) -> str:
    """Text for a quoted Mermaid label: anything but plain characters becomes an entity code."""
    return "".join(c if c.isalnum() or c in " _.,:-()/+=*?" else f"#{ord(c)};" for c in text)


def to_mermaid(workflow: Workflow) -> str:
    """The workflow's graph as Mermaid ``flowchart LR`` text (nested workflows as subgraphs)."""
    graph = _graph(workflow)
    ids = _safe_ids(list(graph.plan.steps), "s_")
    group_ids = _safe_ids(list(graph.group_titles), "g_")
    lines = ["flowchart LR", f"  %% workflow {_mermaid_text(graph.title)}"]
    lines += [
        f"  classDef {fam} fill:{fill},stroke:{line},color:#212121" for fam, (fill, line) in COLOURS.items()
    ]
    lines.append("  classDef conditional stroke-dasharray:5 3")

    def emit(group: str, pad: str) -> None:
        for name in graph.members[group]:
            step = graph.plan.steps[name]
            opening, closing = _MERMAID_SHAPES[stage_family(step.stage)]
            text = f"{_mermaid_text(graph.label(name))}<br/>{_mermaid_text(step.stage)}"
            lines.append(f"{pad}{ids[name]}{opening}{text}{closing}")
        for child in graph.subgroups[group]:
            lines.append(f'{pad}subgraph {group_ids[child]}["{_mermaid_text(graph.group_titles[child])}"]')
            emit(child, pad + "  ")
            lines.append(f"{pad}end")

    emit("", "  ")
    for edge in graph.edges:
        arrow = "-.->" if edge.target in graph.conditional else "-->"
        label = f'|"{_mermaid_text(", ".join(edge.artifacts))}"|' if edge.artifacts else ""
        lines.append(f"  {ids[edge.source]} {arrow}{label} {ids[edge.target]}")
    families: dict[str, list[str]] = {}
    for step in graph.plan:
        families.setdefault(stage_family(step.stage), []).append(ids[step.name])
    lines += [f"  class {','.join(members)} {fam}" for fam, members in families.items()]
    marked = [ids[n] for n in graph.plan.steps if n in graph.conditional]
    lines += [f"  class {','.join(marked)} conditional"] if marked else []
    lines += [f"  style {group_ids[g]} stroke-dasharray:5 3" for g in group_ids if g in graph.conditional]
    return "\n".join(lines) + "\n"


def _dot_text(text: str) -> str:
    """A quoted DOT string; a newline becomes DOT's own ``\\n``."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(workflow: Workflow) -> str:
    """The workflow's graph as Graphviz DOT text (nested workflows as ``cluster_`` subgraphs)."""
    graph = _graph(workflow)
    lines = [
        f"digraph {_dot_text(graph.title)} {{",
        f'  rankdir=LR; labelloc=t; fontname="Helvetica"; label={_dot_text("workflow " + graph.title)};',
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11];',
        '  edge [fontname="Helvetica", fontsize=9, color="#616161"];',
    ]

    def emit(group: str, pad: str) -> None:
        for name in graph.members[group]:
            step = graph.plan.steps[name]
            fill, line = COLOURS[stage_family(step.stage)]
            style = ', style="rounded,filled,dashed"' if name in graph.conditional else ""
            label = _dot_text(f"{graph.label(name)}\n{step.stage}")
            lines.append(
                f'{pad}{_dot_text(name)} [label={label}, fillcolor="{fill}", color="{line}"{style}];'
            )
        for child in graph.subgroups[group]:
            lines.append(f"{pad}subgraph {_dot_text('cluster_' + child)} {{")
            lines.append(
                f'{pad}  label={_dot_text(graph.group_titles[child])}; style=dashed; color="#757575";'
            )
            emit(child, pad + "  ")
            lines.append(f"{pad}}}")

    emit("", "  ")
    for edge in graph.edges:
        attrs = [f"label={_dot_text(', '.join(edge.artifacts))}"] if edge.artifacts else []
        attrs += ["style=dashed"] if edge.target in graph.conditional else []
        suffix = f" [{', '.join(attrs)}]" if attrs else ""
        lines.append(f"  {_dot_text(edge.source)} -> {_dot_text(edge.target)}{suffix};")
    lines.append("}")
    return "\n".join(lines) + "\n"


@dataclass
class _Placed:
    """A block laid out: steps at (column, top), groups at (first column, last column, top, height)."""

    steps: dict[str, tuple[int, float]] = field(default_factory=dict)
    groups: dict[str, tuple[int, int, float, float]] = field(default_factory=dict)
    height: float = 0.0


@dataclass(frozen=True)
class _Layout:
    """Pixel boxes of every step and group, and the picture's size."""

    steps: dict[str, tuple[float, float]]  # top-left corner of each box (BOX_W by BOX_H)
    groups: dict[str, tuple[float, float, float, float]]  # x, y, width, height
    width: float
    height: float
    column_width: float

    def skips(self, edge: _Edge) -> bool:
        """Whether an edge jumps over a column (drawn as an arc so it does not cross the boxes between)."""
        return self.steps[edge.target][0] - self.steps[edge.source][0] > 1.5 * self.column_width


def _layout(graph: _Graph) -> _Layout:
    """Columns by depth; rows by a barycentre pass; each nested group a band of its own rows."""
    column: dict[str, int] = {}
    rank: dict[str, float] = {}
    for col, names in enumerate(graph.plan.levels()):
        order = {name: float(i) for i, name in enumerate(names)}
        for row, name in enumerate(sorted(names, key=lambda n: _barycentre(graph.plan, n, order, rank))):
            column[name], rank[name] = col, float(row)
    placed = _place(graph, "", column, rank)
    below = dict.fromkeys(graph.group_titles, 0)  # how many groups deep each group goes
    for group in sorted(below, key=lambda g: -g.count(".")):
        parent = group.rpartition(".")[0]
        if parent:
            below[parent] = max(below[parent], below[group] + 1)
    widest = GROUP_PAD * (1 + max(below.values(), default=-1))
    step_x = BOX_W + 56.0 + 2 * widest
    left, top = MARGIN + widest, TITLE_H
    steps = {name: (left + col * step_x, top + y) for name, (col, y) in placed.steps.items()}
    groups = {
        group: (left + first * step_x - inset, top + y, (last - first) * step_x + BOX_W + 2 * inset, height)
        for group, (first, last, y, height) in placed.groups.items()
        for inset in [GROUP_PAD * (1 + below[group])]
    }
    columns = max(column.values(), default=0) + 1
    width = 2 * left + (columns - 1) * step_x + BOX_W
    return _Layout(steps, groups, width, top + placed.height + MARGIN, step_x)


def _barycentre(plan: Plan, name: str, order: dict[str, float], rank: dict[str, float]) -> tuple[float, ...]:
    """Sort key of a step in its column: the mean row of its upstream steps, else its plan order."""
    ups = [rank[n] for n in plan.steps[name].needs]
    return (sum(ups) / len(ups) if ups else order[name], order[name])


def _place(graph: _Graph, group: str, column: dict[str, int], rank: dict[str, float]) -> _Placed:
    """Lay out one group: its own steps on top, nested groups packed below where their columns are free."""
    out = _Placed()
    skyline: dict[int, float] = {}
    for name in sorted(graph.members[group], key=rank.__getitem__):
        col = column[name]
        out.steps[name] = (col, skyline.get(col, 0.0))
        skyline[col] = out.steps[name][1] + BOX_H + GAP_Y
    for child in graph.subgroups[group]:
        inner = _place(graph, child, column, rank)
        cols = [c for c, _ in inner.steps.values()] or [0]
        span = range(min(cols), max(cols) + 1)
        top = max(skyline.get(c, 0.0) for c in span)
        height = GROUP_HEAD + inner.height + GROUP_PAD
        out.groups[child] = (span.start, span.stop - 1, top, height)
        shift = top + GROUP_HEAD
        out.steps.update((n, (c, y + shift)) for n, (c, y) in inner.steps.items())
        out.groups.update((g, (a, b, y + shift, h)) for g, (a, b, y, h) in inner.groups.items())
        skyline.update((c, top + height + GAP_Y) for c in span)
    out.height = max(skyline.values(), default=GAP_Y) - GAP_Y
    return out


def _clip(text: str, limit: int = 24) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _svg_text(x: float, y: float, text: str, size: int, colour: str = "#212121", extra: str = "") -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" fill="{colour}"{extra}>{html.escape(text)}</text>'
    )


def to_svg(workflow: Workflow) -> str:
    """The workflow's graph as a standalone SVG document, laid out without Graphviz."""
    graph = _graph(workflow)
    lay, esc, middle = _layout(graph), html.escape, ' text-anchor="middle"'
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{lay.width:.0f}" height="{lay.height:.0f}" '
        f'viewBox="0 0 {lay.width:.0f} {lay.height:.0f}" font-family="Helvetica, Arial, sans-serif">',
        f"<title>{esc('workflow ' + graph.title)}</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#616161"/></marker></defs>',
        '<rect width="100%" height="100%" fill="#ffffff"/>',
        _svg_text(MARGIN, 30, graph.title, 18, extra=' class="title" font-weight="bold"'),
    ]
    for group, (x, y, w, h) in sorted(lay.groups.items(), key=lambda item: item[0].count(".")):
        out.append(
            f'<g class="group" data-group="{esc(group)}"><rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" '
            f'height="{h:.1f}" rx="10" fill="none" stroke="#9e9e9e" stroke-dasharray="6 4"/>'
            f"{_svg_text(x + 8, y + 16, graph.group_titles[group], 12, '#616161')}</g>"
        )
    for edge in graph.edges:
        (x1, y1), (x2, y2) = lay.steps[edge.source], lay.steps[edge.target]
        x1, y1, y2, mid = x1 + BOX_W, y1 + BOX_H / 2, y2 + BOX_H / 2, (x1 + BOX_W + x2) / 2
        c1, c2, lift = (x1 + 60, x2 - 60, BOX_H) if lay.skips(edge) else (mid, mid, 0.0)
        dash = ' stroke-dasharray="5 3"' if edge.target in graph.conditional else ""
        tip = f"<title>{esc(', '.join(edge.artifacts))}</title>" if edge.artifacts else ""
        out.append(
            f'<path class="edge" data-source="{esc(edge.source)}" data-target="{esc(edge.target)}" '
            f'd="M{x1:.1f},{y1:.1f} C{c1:.1f},{y1 + lift:.1f} {c2:.1f},{y2 + lift:.1f} {x2:.1f},{y2:.1f}" '
            f'fill="none" stroke="#616161" stroke-width="1.3" marker-end="url(#arrow)"{dash}>{tip}</path>'
        )
    for name, (x, y) in lay.steps.items():
        stage = graph.plan.steps[name].stage
        fill, line = COLOURS[stage_family(stage)]
        dash = ' stroke-dasharray="5 3"' if name in graph.conditional else ""
        out.append(
            f'<g class="step" data-step="{esc(name)}"><title>{esc(name)} ({esc(stage)})</title>'
            f'<rect class="step" x="{x:.1f}" y="{y:.1f}" width="{BOX_W:.0f}" height="{BOX_H:.0f}" rx="8" '
            f'fill="{fill}" stroke="{line}" stroke-width="1.5"{dash}/>'
            f"{_svg_text(x + BOX_W / 2, y + 20, _clip(graph.label(name)), 13, extra=middle)}"
            f"{_svg_text(x + BOX_W / 2, y + 36, stage, 10, '#616161', middle)}</g>"
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def to_png(workflow: Workflow, path: str | Path) -> Path:
    """Write the workflow's graph as a PNG: with Graphviz's ``dot`` when on PATH, else with matplotlib.

    Raises:
        ScanflowError: neither is installed, or ``dot`` failed.
    """
    target = Path(path)
    dot = shutil.which("dot")
    if dot is not None:
        command = [dot, "-Tpng", "-o", str(target)]
        done = subprocess.run(command, input=to_dot(workflow).encode(), capture_output=True, check=False)
        if done.returncode != 0:
            raise ScanflowError(f"dot could not draw the graph: {done.stderr.decode(errors='replace')}")
        return target
    try:
        figure_module = importlib.import_module("matplotlib.figure")
        patches = importlib.import_module("matplotlib.patches")
    except ImportError:
        raise ScanflowError(
            "drawing a PNG needs Graphviz (the 'dot' program, e.g. 'apt-get install graphviz') or "
            "matplotlib ('pip install matplotlib'); SVG and Mermaid need neither"
        ) from None
    _draw_matplotlib(_graph(workflow), figure_module, patches, target)
    return target


def _draw_matplotlib(graph: _Graph, figure_module: Any, patches: Any, target: Path) -> None:
    """Draw the SVG's layout with matplotlib (pixel coordinates, y pointing down)."""
    lay = _layout(graph)
    dpi = 100 * min(1.0, 20000 / max(lay.width, lay.height))
    figure = figure_module.Figure(figsize=(lay.width / 100, lay.height / 100), dpi=dpi)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_xlim(0, lay.width)
    axes.set_ylim(lay.height, 0)
    axes.axis("off")
    axes.text(MARGIN, 30, graph.title, fontsize=14, fontweight="bold", color="#212121")
    for group, (x, y, w, h) in lay.groups.items():
        axes.add_patch(patches.Rectangle((x, y), w, h, fill=False, edgecolor="#9e9e9e", linestyle="--"))
        axes.text(x + 8, y + 16, graph.group_titles[group], fontsize=9, color="#616161")
    for edge in graph.edges:
        (x1, y1), (x2, y2) = lay.steps[edge.source], lay.steps[edge.target]
        style = {"linestyle": "--" if edge.target in graph.conditional else "-", "color": "#616161"}
        style["connectionstyle"] = f"arc3,rad={0.15 if lay.skips(edge) else 0.0}"
        tail, head = (x1 + BOX_W, y1 + BOX_H / 2), (x2, y2 + BOX_H / 2)
        axes.add_patch(patches.FancyArrowPatch(tail, head, arrowstyle="-|>", mutation_scale=10, **style))
    for name, (x, y) in lay.steps.items():
        stage = graph.plan.steps[name].stage
        fill, line = COLOURS[stage_family(stage)]
        look = {"facecolor": fill, "edgecolor": line, "linestyle": "--" if name in graph.conditional else "-"}
        axes.add_patch(patches.FancyBboxPatch((x, y), BOX_W, BOX_H, "round,pad=0,rounding_size=8", **look))
        axes.text(x + BOX_W / 2, y + 18, _clip(graph.label(name)), ha="center", va="center", fontsize=9)
        axes.text(x + BOX_W / 2, y + 34, stage, ha="center", va="center", fontsize=7, color="#616161")
    figure.savefig(target, format="png", dpi=dpi)


def render(workflow: Workflow, fmt: str) -> str | bytes:
    """The workflow's graph in ``fmt`` (one of :data:`FORMATS`): text, or the PNG's bytes.

    Raises:
        ValueError: ``fmt`` is not one of :data:`FORMATS`.
        ScanflowError: a PNG was asked for and nothing that draws one is installed.
    """
    text_renderers = {"mermaid": to_mermaid, "dot": to_dot, "svg": to_svg}
    if fmt in text_renderers:
        return text_renderers[fmt](workflow)
    if fmt != "png":
        raise ValueError(f"unknown graph format {fmt!r}; expected one of: {', '.join(FORMATS)}")
    with tempfile.TemporaryDirectory(prefix="scanflow-graph-") as folder:
        return to_png(workflow, Path(folder) / "graph.png").read_bytes()
