"""Graph pictures of a plan: Mermaid, DOT, our own SVG layout, PNG and the notebook view."""

from __future__ import annotations

import re
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from scanflow_core import graph
from scanflow_core.errors import ScanflowError
from scanflow_core.spec import STAGES, Workflow, load_workflow

SVG = "{http://www.w3.org/2000/svg}"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

MAIN = """
apiVersion: scanflow/v1
name: demo
params: {threshold: 0.5}
steps:
  - {name: ingest, stage: data_ingestion, command: echo, outputs: [raw]}
  - {name: prep, stage: data_transformation, workflow: prep.yaml, inputs: {source: raw}}
  - name: train
    stage: training
    command: echo
    inputs: {data: prep.clean}
    outputs: {model: {kind: model}}
  - {name: evaluate, stage: evaluation, command: echo, inputs: [model]}
  - name: publish
    stage: packaging
    command: echo
    needs: [evaluate]
    when: "evaluate.accuracy >= params.threshold"
    inputs: [model]
  - {name: prep__clean, stage: logging, command: echo, needs: [publish]}
"""
PREP = """
apiVersion: scanflow/v1
name: prep_flow
inputs: {source: {}}
steps:
  - {name: clean, stage: data_transformation, command: echo, inputs: {data: source}, outputs: [clean]}
  - {name: inner, stage: data_validation, workflow: inner.yaml, inputs: {table: clean}}
"""
INNER = """
apiVersion: scanflow/v1
name: inner
inputs: {table: {}}
steps:
  - {name: check, stage: data_validation, command: echo, inputs: [table]}
"""

#: Every dependency of the demo plan, with the artifacts that flow along it.
EDGES = {
    ("ingest", "prep.clean"): ("raw",),
    ("prep.clean", "prep.inner.check"): ("clean",),
    ("prep.clean", "train"): ("clean",),
    ("train", "evaluate"): ("model",),
    ("evaluate", "publish"): (),
    ("train", "publish"): ("model",),
    ("publish", "prep__clean"): (),
}
GROUPS = {"ingest": [], "prep.clean": ["prep"], "prep.inner.check": ["prep", "prep.inner"], "train": []}


@pytest.fixture
def demo(tmp_path: Path) -> Workflow:
    for name, text in {"main.yaml": MAIN, "prep.yaml": PREP, "inner.yaml": INNER}.items():
        (tmp_path / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return load_workflow(tmp_path / "main.yaml")


def _mermaid_ids(workflow: Workflow) -> dict[str, str]:
    """Each step's Mermaid id, read back from the node labels (the short name and the stage)."""
    text = graph.to_mermaid(workflow)
    ids: dict[str, str] = {}
    for step in workflow.plan:
        short = step.name.rsplit(".", 1)[-1]
        found = re.findall(rf"^\s*(\w+)\W+{re.escape(short)}( \?)?<br/>{step.stage}\W+$", text, re.M)
        ids[step.name] = found[0][0] if len(found) == 1 else f"<{len(found)} nodes>"
    return ids


def test_mermaid_has_every_step_once_with_safe_ids(demo: Workflow) -> None:
    text = graph.to_mermaid(demo)
    ids = _mermaid_ids(demo)
    assert text.startswith("flowchart LR\n")
    assert set(ids) == set(demo.plan.steps)
    assert all(re.fullmatch(r"[A-Za-z0-9_]+", node) for node in ids.values()), ids
    assert len(set(ids.values())) == len(ids), "prep.clean and prep__clean must not share an id"
    for name, node in ids.items():
        definitions = re.findall(rf"^\s*{node}[\[({{]", text, re.M)
        assert len(definitions) == 1, name


def test_mermaid_edges_carry_artifacts_and_mark_conditions(demo: Workflow) -> None:
    text = graph.to_mermaid(demo)
    ids = {node: name for name, node in _mermaid_ids(demo).items()}
    edges = {}
    for source, arrow, label, target in re.findall(
        r'^\s*(\w+) (-->|-\.->)(?:\|"([^"]*)"\|)? (\w+)$', text, re.M
    ):
        edges[(ids[source], ids[target])] = (tuple(label.split(", ")) if label else (), arrow)
    assert {key: arts for key, (arts, _) in edges.items()} == EDGES
    assert {key for key, (_, arrow) in edges.items() if arrow == "-.->"} == {
        ("evaluate", "publish"),
        ("train", "publish"),
    }
    assert "publish ?<br/>packaging" in text
    assert re.search(rf"class {_mermaid_ids(demo)['publish']} conditional", text)


def test_mermaid_nests_subgraphs(demo: Workflow) -> None:
    ids = _mermaid_ids(demo)
    where: dict[str, list[str]] = {}
    stack: list[str] = []
    for line in graph.to_mermaid(demo).splitlines():
        opened = re.match(r'\s*subgraph (\w+)\["([^"]*)"\]', line)
        if opened:
            stack.append(opened.group(2))
        elif line.strip() == "end":
            stack.pop()
        elif node := re.match(r"\s*(\w+)[\[({]", line):
            where[node.group(1)] = list(stack)
    assert not stack
    titles = {"prep": "prep (prep_flow)", "prep.inner": "inner"}
    for name, groups in GROUPS.items():
        assert where[ids[name]] == [titles[g] for g in groups], name


def test_mermaid_and_dot_escape_labels() -> None:
    assert graph._mermaid_text('a"b<c>#;') == "a#34;b#60;c#62;#35;#59;"
    assert graph._dot_text('say "hi"\\\nthere') == '"say \\"hi\\"\\\\\\nthere"'


def test_dot_has_clusters_nodes_and_labelled_edges(demo: Workflow) -> None:
    text = graph.to_dot(demo)
    assert text.startswith('digraph "demo" {') and text.rstrip().endswith("}")
    where: dict[str, list[str]] = {}
    stack: list[str] = []
    edges = {}
    for line in text.splitlines()[1:-1]:
        if opened := re.match(r'\s*subgraph "cluster_([\w.]+)" \{', line):
            stack.append(opened.group(1))
        elif line.strip() == "}":
            stack.pop()
        elif edge := re.match(r'\s*"([\w.]+)" -> "([\w.]+)"(?: \[(?:label="([^"]*)")?.*\])?;', line):
            edges[(edge.group(1), edge.group(2))] = tuple(edge.group(3).split(", ")) if edge.group(3) else ()
        elif node := re.match(r'\s*"([\w.]+)" \[label=', line):
            assert node.group(1) not in where, "a step drawn twice"
            where[node.group(1)] = list(stack)
    assert set(where) == set(demo.plan.steps)
    assert edges == EDGES
    for name, groups in GROUPS.items():
        assert where[name] == groups
    assert re.search(r'"publish" \[label="publish \?\\npackaging".*dashed', text)


def _svg(workflow: Workflow) -> ET.Element:
    return ET.fromstring(graph.to_svg(workflow))


def _boxes(root: ET.Element, kind: str) -> dict[str, tuple[float, float, float, float]]:
    """Each step's (``kind="step"``) or group's box as (left, top, right, bottom), by name."""
    boxes = {}
    for element in root.findall(f".//{SVG}g[@class='{kind}']"):
        rect = element.find(f"{SVG}rect")
        assert rect is not None
        x, y = float(rect.get("x", 0)), float(rect.get("y", 0))
        boxes[element.get(f"data-{kind}", "")] = (
            x,
            y,
            x + float(rect.get("width", 0)),
            y + float(rect.get("height", 0)),
        )
    return boxes


def test_svg_is_xml_with_one_box_per_step_and_every_edge(demo: Workflow) -> None:
    root = _svg(demo)
    assert root.tag == f"{SVG}svg"
    assert root.findtext(f"{SVG}title") == "workflow demo"
    steps = root.findall(f".//{SVG}g[@class='step']")
    assert sorted(g.get("data-step", "") for g in steps) == sorted(demo.plan.steps)
    assert len(root.findall(f".//{SVG}rect[@class='step']")) == len(demo.plan)
    edges = {(p.get("data-source"), p.get("data-target")) for p in root.iter(f"{SVG}path") if p.get("class")}
    assert edges == set(EDGES)
    tips = {
        (p.get("data-source"), p.get("data-target")): p.findtext(f"{SVG}title")
        for p in root.iter(f"{SVG}path")
        if p.get("class")
    }
    assert tips[("ingest", "prep.clean")] == "raw" and tips[("evaluate", "publish")] is None
    publish = next(g for g in steps if g.get("data-step") == "publish")
    assert "publish ?" in [t.text for t in publish.iter(f"{SVG}text")]


def test_svg_groups_hold_their_steps_and_no_others(demo: Workflow) -> None:
    root = _svg(demo)
    boxes, groups = _boxes(root, "step"), _boxes(root, "group")
    assert set(groups) == {"prep", "prep.inner"}
    for group, (gx1, gy1, gx2, gy2) in groups.items():
        for step, (x1, y1, x2, y2) in boxes.items():
            inside = gx1 < x1 and gy1 < y1 and x2 < gx2 and y2 < gy2
            overlaps = x1 < gx2 and gx1 < x2 and y1 < gy2 and gy1 < y2
            member = step.startswith(f"{group}.")
            assert inside == member and overlaps == member, (group, step)
    px1, py1, px2, py2 = groups["prep"]
    ix1, iy1, ix2, iy2 = groups["prep.inner"]
    assert px1 < ix1 and py1 < iy1 and ix2 < px2 and iy2 < py2


def test_svg_columns_follow_plan_levels(demo: Workflow) -> None:
    x = {name: box[0] for name, box in _boxes(_svg(demo), "step").items()}
    for source, target in EDGES:
        assert x[source] < x[target]
    for level in demo.plan.levels():
        assert len({x[name] for name in level}) == 1


def _generated(tmp_path: Path, count: int) -> Workflow:
    lines = ["apiVersion: scanflow/v1", "name: big", "steps:"]
    for i in range(count):
        needs = sorted({i - 1, i // 3, (i * 7) % max(i, 1)} - {i}) if i else []
        needs_text = ", ".join(f"s{n}" for n in needs if n >= 0)
        stage = STAGES[i % len(STAGES)] if STAGES[i % len(STAGES)] != "test" else "evaluation"
        lines.append(f"  - {{name: s{i}, stage: {stage}, command: echo, needs: [{needs_text}]}}")
    path = tmp_path / "big.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return load_workflow(path)


def test_a_thousand_steps_render(tmp_path: Path) -> None:
    workflow = _generated(tmp_path, 1000)
    root = ET.fromstring(graph.to_svg(workflow))
    assert len(root.findall(f".//{SVG}rect[@class='step']")) == 1000
    assert graph.to_mermaid(workflow).count("<br/>") == 1000
    assert graph.to_dot(workflow).count("[label=") == 1000


def test_render_dispatches_and_rejects_unknown_formats(demo: Workflow) -> None:
    assert graph.render(demo, "mermaid") == graph.to_mermaid(demo)
    assert graph.render(demo, "dot") == graph.to_dot(demo)
    assert graph.render(demo, "svg") == graph.to_svg(demo)
    with pytest.raises(
        ValueError, match="unknown graph format 'pdf'; expected one of: mermaid, dot, svg, png"
    ):
        graph.render(demo, "pdf")


def test_notebook_view_shows_svg_and_mermaid(demo: Workflow) -> None:
    bundle = demo._repr_mimebundle_()
    assert set(bundle) == {"image/svg+xml", "text/markdown"}
    ET.fromstring(bundle["image/svg+xml"])
    assert bundle["text/markdown"].startswith("```mermaid\nflowchart LR\n")
    assert bundle["text/markdown"].endswith("\n```")


def test_stage_families_cover_every_stage() -> None:
    families = {stage: graph.stage_family(stage) for stage in STAGES}
    assert set(families.values()) == set(graph.COLOURS)
    assert families["data_splitting"] == "data" and families["test"] == "model"
    assert families["serving"] == "ops" and families["objectives"] == "objectives"


@pytest.fixture
def no_dot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH holds only an empty folder of the test's own (put a fake ``dot`` there to use one)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", str(folder))
    return folder


def test_png_without_dot_or_matplotlib_says_what_to_install(
    demo: Workflow, no_dot: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ScanflowError, match=r"Graphviz \(the 'dot' program.*pip install matplotlib"):
        graph.to_png(demo, tmp_path / "out.png")
    with pytest.raises(ScanflowError, match="pip install matplotlib"):
        graph.render(demo, "png")
    assert not (tmp_path / "out.png").exists()


def test_png_with_matplotlib(demo: Workflow, no_dot: Path, tmp_path: Path) -> None:
    written = graph.to_png(demo, tmp_path / "out.png")
    assert written.read_bytes().startswith(PNG_SIGNATURE)
    assert graph.render(demo, "png")[:8] == PNG_SIGNATURE


def test_png_pipes_dot_text_to_the_dot_program(demo: Workflow, no_dot: Path, tmp_path: Path) -> None:
    fake = no_dot / "dot"
    fake.write_text(
        f"#!{sys.executable}\nimport sys\nout = sys.argv[sys.argv.index('-o') + 1]\n"
        "open(out, 'wb').write(b'\\x89PNG\\r\\n\\x1a\\n' + sys.stdin.buffer.read())\n"
    )
    fake.chmod(0o755)
    data = graph.to_png(demo, tmp_path / "out.png").read_bytes()
    assert data.startswith(PNG_SIGNATURE) and data[8:].decode() == graph.to_dot(demo)


def test_png_reports_a_failing_dot(demo: Workflow, no_dot: Path, tmp_path: Path) -> None:
    fake = no_dot / "dot"
    fake.write_text(
        f"#!{sys.executable}\nimport sys\nsys.stderr.write('syntax error in line 3')\nsys.exit(1)\n"
    )
    fake.chmod(0o755)
    with pytest.raises(ScanflowError, match="dot could not draw the graph: syntax error in line 3"):
        graph.to_png(demo, tmp_path / "out.png")
