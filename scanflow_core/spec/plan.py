"""The plan of a workflow: nested workflows flattened, steps in topological order, graph rules.

Rules checked here (at load time): duplicate step names, unknown ``needs``, cycles, an input that
no step or workflow input produces, an artifact written twice, a ``test`` step that feeds
training or reads the data an ``evaluation`` step reads, and objectives / ``when:`` conditions
that do not parse or name steps and parameters that are not there.
"""

from __future__ import annotations

import difflib
import heapq
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scanflow_core.errors import Problem, SpecError, one_of
from scanflow_core.spec.models import ArtifactSpec, Step, Workflow

__all__ = ["Artifact", "Condition", "Plan", "PlannedStep", "build_plan", "resolve_step_name"]

SYSTEM_NAMES = frozenset({"device", "gpus", "cpus", "platform", "python"})


@dataclass(frozen=True, slots=True)
class Condition:
    """A ``when:`` that must hold for a step to run: its own, or that of a nested workflow holding it.

    ``scope`` is the prefix of the step names the expression reads (``prep.`` inside ``prep``);
    ``params`` are the parameters it sees.
    """

    expr: str
    scope: str
    params: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class PlannedStep:
    """One runnable step of the flattened plan.

    ``name`` is qualified (``prep.ingest`` for step ``ingest`` of nested workflow ``prep``);
    ``needs`` holds every upstream step, declared or implied by an input; ``inputs`` maps the
    step's own input names to qualified artifact names.
    """

    name: str
    spec: Step
    workflow: Workflow
    directory: Path
    index: int
    needs: tuple[str, ...]
    inputs: Mapping[str, str]
    params: Mapping[str, Any]
    group: str = ""
    conditions: tuple[Condition, ...] = ()

    @property
    def stage(self) -> str:
        return self.spec.stage

    @property
    def outputs(self) -> dict[str, ArtifactSpec]:
        return self.spec.outputs

    def artifact(self, output: str) -> str:
        """The qualified artifact name of one of this step's outputs."""
        return f"{self.group}.{output}" if self.group else output


@dataclass(frozen=True, slots=True)
class Artifact:
    """Who makes a qualified artifact: a step's output, or a workflow input file (``producer`` None)."""

    name: str
    spec: ArtifactSpec
    producer: str | None
    output: str
    path: Path | None = None


@dataclass
class Plan:
    """Steps in a topological order (declaration order among independent steps)."""

    steps: dict[str, PlannedStep]
    artifacts: dict[str, Artifact]
    _children: dict[str, list[str]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for name in self.steps:
            self._children.setdefault(name, [])
        for step in self.steps.values():
            for need in step.needs:
                self._children[need].append(step.name)

    def __iter__(self) -> Iterator[PlannedStep]:
        return iter(self.steps.values())

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, name: str) -> PlannedStep:
        try:
            return self.steps[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self.steps), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise KeyError(f"no step named {name!r}{hint}") from None

    def downstream(self, name: str) -> list[str]:
        """The steps that need ``name`` directly."""
        return list(self._children[name])

    def ancestors(self, name: str) -> set[str]:
        return _reach(name, lambda n: self.steps[n].needs)

    def descendants(self, name: str) -> set[str]:
        return _reach(name, self._children.__getitem__)

    def subset(self, targets: Iterable[str]) -> list[str]:
        """The targets and everything upstream of them, in plan order."""
        wanted: set[str] = set()
        for target in targets:
            self[target]
            wanted |= self.ancestors(target) | {target}
        return [name for name in self.steps if name in wanted]

    def levels(self) -> list[list[str]]:
        """Steps grouped by depth: every step of level *n* needs only steps of levels below *n*."""
        depth: dict[str, int] = {}
        for step in self.steps.values():
            depth[step.name] = 1 + max((depth[n] for n in step.needs), default=-1)
        out: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
        for name, level in depth.items():
            out[level].append(name)
        return out


def _reach(start: str, edges: Any) -> set[str]:
    seen: set[str] = set()
    stack = list(edges(start))
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(edges(node))
    return seen


def build_plan(workflow: Workflow, directory: Path) -> Plan:
    """Flatten ``workflow`` (its nested workflows already planned) and check the graph rules."""
    builder = _PlanBuilder(workflow, directory)
    return builder.build()


class _PlanBuilder:
    def __init__(self, workflow: Workflow, directory: Path) -> None:
        self.wf = workflow
        self.directory = directory
        self.problems: list[Problem] = []
        self.local = {s.name: i for i, s in enumerate(workflow.steps)}

    def fail_if_any(self) -> None:
        if self.problems:
            raise SpecError(self.wf.file, self.problems)

    def problem(self, path: str, message: str, expected: str | None = None) -> None:
        self.problems.append(Problem(path, message, expected))

    def build(self) -> Plan:
        self._check_names()
        self.fail_if_any()
        artifacts = self._artifacts()
        self.fail_if_any()
        steps = self._flatten(artifacts)
        self.fail_if_any()
        ordered = self._order(steps)
        self.fail_if_any()
        plan = Plan(ordered, artifacts)
        self._check_test_rules(plan)
        self._check_expressions(plan)
        self.fail_if_any()
        return plan

    def _check_names(self) -> None:
        seen: dict[str, int] = {}
        for i, step in enumerate(self.wf.steps):
            if step.name in seen:
                self.problem(
                    f"steps[{i}].name", f"duplicate step name {step.name!r} (also steps[{seen[step.name]}])"
                )
            seen.setdefault(step.name, i)
        for i, step in enumerate(self.wf.steps):
            for j, need in enumerate(step.needs):
                if need not in self.local:
                    self.problem(
                        f"steps[{i}].needs[{j}]", f"no step named {need!r}", one_of(self.local, need)
                    )
                elif need == step.name:
                    self.problem(f"steps[{i}].needs[{j}]", f"step {need!r} needs itself")

    def _artifacts(self) -> dict[str, Artifact]:
        artifacts: dict[str, Artifact] = {}
        for name, spec in self.wf.inputs.items():
            path = self.directory / spec.path if spec.path else None
            artifacts[name] = Artifact(name, spec, None, name, path)
        for i, step in enumerate(self.wf.steps):
            if step.workflow is not None:
                for qualified, art in self.wf.children[step.name].plan.artifacts.items():
                    name = f"{step.name}.{qualified}"
                    if art.producer is not None:
                        artifacts[name] = Artifact(name, art.spec, f"{step.name}.{art.producer}", art.output)
                    elif art.path is not None:  # a nested input file its steps may read when unbound
                        artifacts[name] = Artifact(name, art.spec, None, art.output, art.path)
                continue
            for output, spec in step.outputs.items():
                if output in artifacts:
                    other = artifacts[output].producer
                    by = f"step {other!r}" if other else "a workflow input"
                    self.problem(
                        f"steps[{i}].outputs.{output}", f"artifact {output!r} is also written by {by}"
                    )
                artifacts[output] = Artifact(output, spec, step.name, output)
        return artifacts

    def _resolve_input(self, path: str, ref: str, artifacts: Mapping[str, Artifact]) -> str | None:
        if ref in artifacts:
            return ref
        self.problem(path, f"no step or workflow input produces {ref!r}", one_of(artifacts, ref))
        return None

    def _flatten(self, artifacts: Mapping[str, Artifact]) -> list[PlannedStep]:
        out: list[PlannedStep] = []
        sinks: dict[str, list[str]] = {}
        for step in self.wf.steps:
            if step.workflow is None:
                continue
            child = self.wf.children[step.name].plan
            sinks[step.name] = [f"{step.name}.{n}" for n in child.steps if not child.downstream(n)]

        def upstream(names: Iterable[str]) -> list[str]:
            result: list[str] = []
            for name in names:
                result.extend(sinks.get(name, [name]))
            return result

        for i, step in enumerate(self.wf.steps):
            needs = upstream(step.needs)
            if step.workflow is None:
                inputs: dict[str, str] = {}
                for local, ref in step.inputs.items():
                    resolved = self._resolve_input(f"steps[{i}].inputs.{local}", ref, artifacts)
                    if resolved is not None:
                        inputs[local] = resolved
                        producer = artifacts[resolved].producer
                        if producer is not None and producer not in needs:
                            needs.append(producer)
                params = {**self.wf.params, **step.params}
                conditions = (Condition(step.when, "", params),) if step.when else ()
                out.append(
                    PlannedStep(
                        step.name,
                        step,
                        self.wf,
                        self.directory,
                        i,
                        tuple(needs),
                        inputs,
                        params,
                        "",
                        conditions,
                    )
                )
                continue
            out.extend(self._flatten_child(i, step, needs, artifacts))
        return out

    def _flatten_child(
        self, i: int, step: Step, needs: list[str], artifacts: Mapping[str, Artifact]
    ) -> Iterator[PlannedStep]:
        child_wf = self.wf.children[step.name]
        child = child_wf.plan
        bound: dict[str, str] = {}
        for local, ref in step.inputs.items():
            if local not in child_wf.inputs:
                self.problem(
                    f"steps[{i}].inputs.{local}",
                    f"nested workflow {child_wf.name!r} has no input {local!r}",
                    one_of(child_wf.inputs, local),
                )
                continue
            resolved = self._resolve_input(f"steps[{i}].inputs.{local}", ref, artifacts)
            if resolved is not None:
                bound[local] = resolved
        for name, spec in child_wf.inputs.items():
            if name not in bound and spec.path is None:
                self.problem(f"steps[{i}].inputs", f"nested workflow {child_wf.name!r} needs input {name!r}")
        for planned in child:
            own_needs = [f"{step.name}.{n}" for n in planned.needs]
            inputs = {}
            for local, ref in planned.inputs.items():
                target = bound.get(ref) or f"{step.name}.{ref}"
                inputs[local] = target
                producer = artifacts[target].producer if target in artifacts else None
                if (
                    producer is not None
                    and producer not in own_needs
                    and not producer.startswith(f"{step.name}.")
                ):
                    own_needs.append(producer)
            if not planned.needs:
                own_needs = list(dict.fromkeys([*needs, *own_needs]))
            params = {**planned.params, **{k: v for k, v in step.params.items() if k in child_wf.params}}
            group = f"{step.name}.{planned.group}" if planned.group else step.name
            inner = tuple(Condition(c.expr, f"{step.name}.{c.scope}", c.params) for c in planned.conditions)
            outer = (Condition(step.when, "", {**self.wf.params, **step.params}),) if step.when else ()
            yield PlannedStep(
                f"{step.name}.{planned.name}",
                planned.spec,
                planned.workflow,
                planned.directory,
                planned.index,
                tuple(dict.fromkeys(own_needs)),
                inputs,
                params,
                group,
                outer + inner,
            )

    def _order(self, steps: list[PlannedStep]) -> dict[str, PlannedStep]:
        by_name = {s.name: s for s in steps}
        position = {s.name: n for n, s in enumerate(steps)}
        waiting = {s.name: len(set(s.needs)) for s in steps}
        children: dict[str, list[str]] = {s.name: [] for s in steps}
        for s in steps:
            for need in set(s.needs):
                children[need].append(s.name)
        ready = [(position[n], n) for n, count in waiting.items() if count == 0]
        heapq.heapify(ready)
        ordered: dict[str, PlannedStep] = {}
        while ready:
            _, name = heapq.heappop(ready)
            ordered[name] = by_name[name]
            for child in children[name]:
                waiting[child] -= 1
                if waiting[child] == 0:
                    heapq.heappush(ready, (position[child], child))
        if len(ordered) < len(steps):
            cycle = _find_cycle({n: by_name[n].needs for n in by_name if n not in ordered})
            first = by_name[cycle[0]]
            where = f"steps[{self._local_index(first)}].needs"
            self.problem(where, "the steps form a cycle: " + " → ".join([*cycle, cycle[0]]))
        return ordered

    def _local_index(self, step: PlannedStep) -> int:
        return self.local.get(step.name.split(".", 1)[0], step.index)

    def _check_test_rules(self, plan: Plan) -> None:
        eval_data: dict[str, str] = {}
        for step in plan:
            if step.stage == "evaluation":
                for artifact in step.inputs.values():
                    if plan.artifacts[artifact].spec.kind == "data":
                        eval_data.setdefault(artifact, step.name)
        for step in plan:
            if step.stage != "test":
                continue
            path = f"steps[{self._local_index(step)}]"
            for trainer in sorted(plan.descendants(step.name)):
                if plan[trainer].stage == "training":
                    self.problem(
                        path,
                        f"test step {step.name!r} feeds training step {trainer!r}: MLSpec keeps test "
                        "results out of training",
                    )
            for local, artifact in step.inputs.items():
                if artifact in eval_data:
                    self.problem(
                        f"{path}.inputs.{local}",
                        f"test step {step.name!r} reads {artifact!r}, which evaluation step "
                        f"{eval_data[artifact]!r} also reads: MLSpec keeps test data apart from evaluation "
                        f"data (declare 'kind: model' on {artifact!r} if it is not data)",
                    )

    def _check_expressions(self, plan: Plan) -> None:
        from scanflow_core.expressions import ExpressionError, parse

        for k, objective in enumerate(self.wf.objectives):
            path = f"objectives[{k}].expr"
            try:
                expression = parse(objective.expr)
            except ExpressionError as exc:
                self.problem(path, f"objective does not parse: {exc.reason} at column {exc.position + 1}")
                continue
            for name in sorted(expression.names):
                self._check_name(path, name, plan, self.wf.params, upstream=None)
        for i, spec in enumerate(self.wf.steps):
            if spec.when is None:
                continue
            path = f"steps[{i}].when"
            try:
                expression = parse(spec.when)
            except ExpressionError as exc:
                self.problem(path, f"'when' does not parse: {exc.reason} at column {exc.position + 1}")
                continue
            if spec.workflow is None:
                first = plan[spec.name]
            else:  # a nested workflow's condition: what is upstream of its first steps
                first = next(s for s in plan if s.name.startswith(f"{spec.name}.") and not s.conditions[1:])
            params = {**self.wf.params, **spec.params}

            def upstream(first: PlannedStep = first) -> set[str]:
                return plan.ancestors(first.name)

            for name in sorted(expression.names):
                self._check_name(path, name, plan, params, upstream, spec.name)

    def _check_name(
        self,
        path: str,
        name: str,
        plan: Plan,
        params: Mapping[str, Any],
        upstream: Callable[[], set[str]] | None,
        step: str = "",
    ) -> None:
        head, _, rest = name.partition(".")
        if head == "params":
            if rest not in params:
                self.problem(path, f"unknown parameter {rest!r} in {name!r}", one_of(params, rest))
            return
        if head == "system" and upstream is not None:
            if rest not in SYSTEM_NAMES:
                self.problem(path, f"unknown system value {name!r}", one_of(sorted(SYSTEM_NAMES), rest))
            return
        target = resolve_step_name(name, plan.steps)
        if target is None:
            wanted = "'params.NAME', 'system.NAME' or 'STEP.METRIC'" if upstream is not None else None
            expected = wanted or "'params.NAME' or 'STEP.METRIC'"
            close = difflib.get_close_matches(head, list(plan.steps), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            self.problem(path, f"{name!r} names no step or parameter", expected + hint)
        elif upstream is not None and target[0] not in upstream():
            self.problem(
                path,
                f"{name!r} reads step {target[0]!r}, which is not upstream of {step!r}",
                f"{target[0]!r} in needs",
            )


def resolve_step_name(name: str, steps: Mapping[str, Any]) -> tuple[str, str] | None:
    """Split ``prep.train.accuracy`` into (step, metric) by the longest step-name prefix."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        candidate = ".".join(parts[:cut])
        if candidate in steps:
            return candidate, ".".join(parts[cut:])
    return None


def _find_cycle(needs: Mapping[str, Iterable[str]]) -> list[str]:
    """One cycle among steps that Kahn's algorithm could not order."""
    colour: dict[str, int] = {}
    for start in needs:
        stack: list[tuple[str, Iterator[str]]] = [(start, iter(needs[start]))]
        path = [start]
        colour[start] = 1
        while stack:
            node, edges = stack[-1]
            nxt = next((n for n in edges if n in needs), None)
            if nxt is None:
                colour[node] = 2
                stack.pop()
                path.pop()
            elif colour.get(nxt) == 1:
                cycle = path[path.index(nxt) :]
                return list(reversed(cycle))
            elif nxt not in colour:
                colour[nxt] = 1
                stack.append((nxt, iter(needs[nxt])))
                path.append(nxt)
    return sorted(needs)
