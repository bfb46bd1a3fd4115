"""Protocol file → validated model → Plan, collecting every problem with its file:line.

Validation is complete before any instrument moves: unknown fields and step kinds (with the
nearest valid name), quantities of the wrong dimension, undefined parameters and labels, loops
that cannot end. Overrides from the command line (pressure, temperature, cell) are applied before
compiling, because the cell area turns densities into currents.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from labctl import units
from labctl.errors import ProtocolError
from labctl.protocol import model
from labctl.protocol.loader import Path_, SourceMap, format_path, load_file, load_text
from labctl.protocol.plan import Action, CellSpec, End, Plan, PlanStep, RecordRule, Watch

MAX_PLAN_STEPS = 100_000


class _RestBody(model.Strict):
    label: str | None = None
    until: Any
    record: model.Record | None = None


class _CurrentBody(model.Strict):
    label: str | None = None
    density: model.DensityOrParameter | None = None
    current: model.CurrentOrParameter | None = None
    until: Any
    record: model.Record | None = None


class _RepeatBody(model.Strict):
    label: str | None = None
    times: int = Field(ge=1, le=100_000)
    steps: list[Any]


class _LinearValues(model.Strict):
    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)
    start: Any = Field(alias="from")
    stop: Any = Field(alias="to")
    step: Any


class _GeometricValues(model.Strict):
    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)
    start: Any = Field(alias="from")
    stop: Any = Field(alias="to")
    factor: float = Field(gt=1.0)


class _SweepBody(model.Strict):
    label: str | None = None
    parameter: str = Field(pattern=r"^[A-Za-z_]\w*$")
    values: list[Any] | _LinearValues | _GeometricValues
    steps: list[Any]


STEP_KINDS: dict[str, type[BaseModel]] = {
    "rest": _RestBody,
    "current": _CurrentBody,
    "repeat": _RepeatBody,
    "sweep": _SweepBody,
}
ACTIONS = ("next", "stop", "alarm", "record")


@dataclass
class Overrides:
    """Command-line values that replace the protocol's (SI units; None = keep the protocol's)."""

    pressure_pa: float | None = None
    temperature_k: float | None = None
    material: str | None = None
    thickness_m: float | None = None
    area_m2: float | None = None


@dataclass
class _Compiler:
    source: SourceMap
    area_m2: float = 1.0
    record: RecordRule | None = None
    problems: list[str] = field(default_factory=list)
    steps: list[PlanStep] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)
    pending_gotos: list[tuple[Path_, str, Any]] = field(default_factory=list)

    def problem(self, path: Path_, message: str) -> None:
        self.problems.append(f"{self.source.where(path)}: {format_path(path)}: {message}")

    def validation_problems(self, path: Path_, error: ValidationError) -> None:
        """Report pydantic's errors with file:line; a misspelt field is one problem, not two."""
        items = error.errors()
        suggested: set[tuple[Any, ...]] = set()
        messages: list[tuple[Path_, str]] = []
        for item in items:
            where = (*path, *item["loc"])
            message = item["msg"].removeprefix("Value error, ")
            if item["type"] == "extra_forbidden":
                name = str(item["loc"][-1])
                known = _fields_at(error, item)
                guess = difflib.get_close_matches(name, known, n=1)
                hint = f"; did you mean '{guess[0]}'?" if guess else f"; valid fields: {', '.join(known)}"
                message = f"unknown field '{name}'{hint}"
                if guess:
                    suggested.add((*item["loc"][:-1], guess[0]))
            elif item["type"] == "missing":
                message = f"'{item['loc'][-1]}' is required here"
            messages.append((where, message))
        for item, (where, message) in zip(items, messages, strict=True):
            if item["type"] == "missing" and tuple(item["loc"]) in suggested:
                continue  # the unknown field next to it is this one, misspelt
            self.problem(where, message)

    def compile_steps(
        self: _Compiler, items: list[Any], path: Path_, context: dict[str, Any], top_level: bool
    ) -> None:
        if not isinstance(items, list):
            self.problem(
                path, "steps must be a list, each item one step such as '- rest: {until: {time: 1 h}}'"
            )
            return
        for i, item in enumerate(items):
            item_path = (*path, i)
            if not isinstance(item, dict) or len(item) != 1:
                self.problem(
                    item_path, f"each step is one mapping with a single kind: {', '.join(STEP_KINDS)}"
                )
                continue
            kind, body = next(iter(item.items()))
            if kind not in STEP_KINDS:
                guess = difflib.get_close_matches(kind, STEP_KINDS, n=1)
                hint = f"did you mean '{guess[0]}'?" if guess else f"valid kinds: {', '.join(STEP_KINDS)}"
                self.problem(item_path, f"unknown step kind '{kind}'; {hint}")
                continue
            body_path = (*item_path, kind)
            try:
                parsed = STEP_KINDS[kind].model_validate(body if body is not None else {})
            except ValidationError as exc:
                self.validation_problems(body_path, exc)
                continue
            label = getattr(parsed, "label", None)
            if label is not None:
                if not top_level:
                    self.problem(
                        (*body_path, "label"),
                        "labels inside a loop would repeat; put the label on a top-level step",
                    )
                elif label in self.labels:
                    self.problem((*body_path, "label"), f"label '{label}' is used twice")
                else:
                    self.labels[label] = len(self.steps)
            if isinstance(parsed, _RepeatBody):
                for cycle in range(1, parsed.times + 1):
                    self.compile_steps(
                        parsed.steps, (*body_path, "steps"), {**context, "cycle": cycle}, False
                    )
                    if self.problems:
                        break
            elif isinstance(parsed, _SweepBody):
                self.compile_sweep(parsed, body_path, context)
            else:
                self.compile_leaf(kind, parsed, body_path, context)

    def compile_sweep(self: _Compiler, sweep: _SweepBody, path: Path_, context: dict[str, Any]) -> None:
        values = self.sweep_values(sweep, (*path, "values"))
        if values is None:
            return
        if not values:
            self.problem((*path, "values"), "the sweep has no values")
        for value in values:
            self.compile_steps(sweep.steps, (*path, "steps"), {**context, sweep.parameter: value}, False)
            if self.problems:
                return

    def sweep_values(self: _Compiler, sweep: _SweepBody, path: Path_) -> list[Any] | None:
        """Sweep values stay raw text until a step uses them, where their dimension is known."""
        spec = sweep.values
        if isinstance(spec, list):
            return [("raw", v, (*path, i)) for i, v in enumerate(spec)]
        try:
            kind = _guess_kind(spec.start)
            start, stop = units.parse(spec.start, kind), units.parse(spec.stop, kind)
            if isinstance(spec, _LinearValues):
                step = units.parse(spec.step, kind)
                if step == 0 or (stop - start) / step < 0:
                    self.problem(path, "step must be non-zero and go from 'from' towards 'to'")
                    return None
                count = math.floor((stop - start) / step + 1e-9) + 1
                numbers = [start + k * step for k in range(count)]
            else:
                if start <= 0 or stop <= start:
                    self.problem(path, "a geometric sweep needs 0 < from < to")
                    return None
                count = math.floor(math.log(stop / start) / math.log(spec.factor) + 1e-9) + 1
                numbers = [start * spec.factor**k for k in range(count)]
        except units.UnitError as exc:
            self.problem(path, str(exc))
            return None
        if len(numbers) > MAX_PLAN_STEPS:
            self.problem(path, f"{len(numbers)} values; the limit is {MAX_PLAN_STEPS}")
            return None
        return [("si", round(n, 15), kind, path) for n in numbers]

    def resolve(
        self: _Compiler, value: Any, kind: units.Kind, path: Path_, context: dict[str, Any]
    ) -> float | None:
        """A step field's SI value, substituting a sweep parameter if it is one."""
        if not isinstance(value, model.ParameterRef):
            return value
        if value.name not in context or value.name == "cycle":
            known = [k for k in context if k != "cycle"]
            hint = (
                f"parameters in scope: {', '.join(known)}" if known else "no sweep defines a parameter here"
            )
            self.problem(path, f"'${{{value.name}}}' is not defined; {hint}")
            return None
        entry = context[value.name]
        try:
            if entry[0] == "raw":
                number = units.parse(entry[1], kind)
            elif entry[2] != kind:
                raise units.UnitError(
                    f"sweep '{value.name}' holds {entry[2].replace('_', ' ')} values, "
                    f"but a {kind.replace('_', ' ')} is needed here"
                )
            else:
                number = entry[1]
        except units.UnitError as exc:
            where = entry[2] if entry[0] == "raw" else entry[3]
            self.problem(where, f"{exc} (used at line {self.source.line_of(path)})")
            return None
        return value.factor * number

    def compile_leaf(self: _Compiler, kind: str, body: Any, path: Path_, context: dict[str, Any]) -> None:
        record = _record_rule(body.record) if body.record is not None else self.record
        assert record is not None
        density = None
        current = 0.0
        if kind == "current":
            if (body.density is None) == (body.current is None):
                self.problem(
                    path, "give exactly one of 'density' (e.g. 0.1 mA/cm^2) or 'current' (e.g. 1 mA)"
                )
                return
            if body.density is not None:
                density = self.resolve(body.density, "current_density", (*path, "density"), context)
                if density is None:
                    return
                current = units.absolute(density, self.area_m2)
            else:
                resolved = self.resolve(body.current, "current", (*path, "current"), context)
                if resolved is None:
                    return
                current = resolved
        ends = self.ends(body.until, (*path, "until"), kind, current)
        if ends is None:
            return
        shown = {k: v for k, v in context.items() if k != "cycle"}
        description = kind if density is None else f"{kind} {units.to_ma_per_cm2(density):+.3g} mA/cm²"
        if "cycle" in context:
            description += f" · cycle {context['cycle']}"
        plain_context: dict[str, Any] = {"cycle": context.get("cycle")} if "cycle" in context else {}
        for name, entry in shown.items():
            plain_context[name] = entry[1] if entry[0] == "si" else _si_or_text(entry[1])
        self.steps.append(
            PlanStep(
                index=len(self.steps),
                kind=kind,  # type: ignore[arg-type]
                description=description,
                line=self.source.line_of(path),
                current_a=current,
                density_a_m2=density,
                ends=tuple(ends),
                record=record,
                label=body.label,
                context=plain_context,
            )
        )

    def ends(self: _Compiler, until: Any, path: Path_, kind: str, current_a: float) -> list[End] | None:
        entries: list[tuple[Path_, dict[str, Any]]] = []
        if isinstance(until, dict):
            shared = {k: until[k] for k in ("action", "debounce") if k in until}
            entries = [((*path, k), {k: v, **shared}) for k, v in until.items() if k not in shared]
        elif isinstance(until, list):
            entries = [((*path, i), item) for i, item in enumerate(until) if isinstance(item, dict)]
            if len(entries) != len(until):
                self.problem(
                    path, "each 'until' item is a mapping such as {capacity: 0.1 mAh/cm^2, action: next}"
                )
                return None
        else:
            self.problem(
                path, "'until' says when the step ends, e.g. {time: 30 min} or {capacity: 0.1 mAh/cm^2}"
            )
            return None
        ends: list[End] = []
        for where, entry in entries:
            extra = {k: v for k, v in entry.items() if k not in ("action", "debounce")}
            if len(extra) != 1:
                self.problem(where, f"name exactly one end condition: {', '.join(model.END_CONDITIONS)}")
                continue
            condition, raw = next(iter(extra.items()))
            cond_path = where if isinstance(until, dict) else (*where, condition)
            if condition not in model.END_CONDITIONS:
                guess = difflib.get_close_matches(condition, model.END_CONDITIONS, n=1)
                hint = f"did you mean '{guess[0]}'?" if guess else f"valid: {', '.join(model.END_CONDITIONS)}"
                self.problem(cond_path, f"unknown end condition '{condition}'; {hint}")
                continue
            try:
                value = units.parse(raw, model.END_CONDITIONS[condition])  # type: ignore[arg-type]
                debounce = units.parse(entry.get("debounce", "0 s"), "time")
            except units.UnitError as exc:
                self.problem(cond_path, str(exc))
                continue
            if condition == "capacity":
                condition, value = "charge", units.absolute(value, self.area_m2)
            if condition == "charge" and (kind == "rest" or current_a == 0):
                self.problem(cond_path, "a step without current never reaches a capacity; end it on time")
                continue
            if condition in ("time", "charge") and value <= 0 and condition != "time":
                self.problem(cond_path, "must be positive")
                continue
            action = self.action((*where, "action"), entry.get("action", "next"))
            ends.append(End(condition, value, action, debounce))
        if not entries:
            self.problem(path, "give at least one end condition, e.g. {time: 1 h}")
            return None
        if len(ends) != len(entries):
            return None  # each failed entry was reported already
        return ends

    def action(self: _Compiler, path: Path_, raw: Any) -> Action:
        if isinstance(raw, model.Goto):
            raw = {"goto": raw.goto}
        if isinstance(raw, str) and raw in ACTIONS:
            return Action(raw)  # type: ignore[arg-type]
        if isinstance(raw, dict) and set(raw) == {"goto"} and isinstance(raw["goto"], str):
            self.pending_gotos.append((path, raw["goto"], None))
            return Action("goto", label=raw["goto"])
        self.problem(path, f"action must be one of {', '.join(ACTIONS)} or {{goto: <label>}}, not {raw!r}")
        return Action("next")

    def resolve_gotos(self: _Compiler) -> None:
        for path, label, _ in self.pending_gotos:
            if label not in self.labels:
                guess = difflib.get_close_matches(label, self.labels, n=1)
                hint = f"; did you mean '{guess[0]}'?" if guess else "; label a top-level step with 'label:'"
                self.problem(path, f"no step is labelled '{label}'{hint}")
        if self.problems:
            return
        fixed = [
            PlanStep(**{**_fields(step), "ends": tuple(self.with_target(end) for end in step.ends)})
            for step in self.steps
        ]
        self.steps[:] = fixed

    def with_target(self: _Compiler, end: End | Any) -> Any:
        action = end.action
        if action.kind == "goto":
            action = Action("goto", self.labels[action.label], action.label)
            return End(end.condition, end.value, action, end.debounce_s)
        return end


def _fields_at(error: ValidationError, item: Any) -> list[str]:
    model_cls = _MODEL_BY_TITLE.get(error.title)
    for part in item["loc"][:-1]:
        if model_cls is None or isinstance(part, int):
            break
        info = model_cls.model_fields.get(str(part))
        model_cls = _model_of(info.annotation) if info else None
    return sorted(model_cls.model_fields) if model_cls else []


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found:
            return found
    return None


_MODEL_BY_TITLE: dict[str, type[BaseModel]] = {
    cls.__name__: cls for cls in (model.Header, *STEP_KINDS.values(), model.Record)
}


def compile_file(path: Path, overrides: Overrides | None = None) -> tuple[Plan, str]:
    """Load, validate and compile a protocol file; returns the plan and the file's text."""
    data, source, text = load_file(path)
    return compile_data(data, source, overrides), text


def compile_text(text: str, filename: str = "<protocol>", overrides: Overrides | None = None) -> Plan:
    """Compile protocol text (tests, the Python API, MQTT submissions later)."""
    data, source = load_text(text, filename)
    return compile_data(data, source, overrides)


def compile_data(data: Any, source: SourceMap, overrides: Overrides | None = None) -> Plan:
    """Validate plain data and compile it; raises one ProtocolError listing every problem."""
    overrides = overrides or Overrides()
    compiler = _Compiler(source)
    if not isinstance(data, dict):
        raise ProtocolError(f"{source.where(())}: a protocol is a mapping with name, steps, …")
    try:
        header = model.Header.model_validate(data)
    except ValidationError as exc:
        compiler.validation_problems((), exc)
        if isinstance(data.get("steps"), list):  # still report the steps' problems, with defaults
            compiler.area_m2 = model.Cell().area
            compiler.record = _record_rule(model.Record())
            compiler.compile_steps(data["steps"], ("steps",), context={}, top_level=True)
        raise ProtocolError(_summary(compiler.problems)) from None

    cell = CellSpec(
        kind=header.cell.kind,
        material=overrides.material or header.cell.material,
        area_m2=overrides.area_m2 or header.cell.area,
        thickness_m=overrides.thickness_m or header.cell.thickness,
    )
    compiler.area_m2 = cell.area_m2
    compiler.record = _record_rule(header.record)
    watches = [compiler_watch(compiler, name, watch) for name, watch in header.watch.items()]
    if not header.steps:
        compiler.problem(("steps",), "a protocol needs at least one step")
    compiler.compile_steps(header.steps, ("steps",), context={}, top_level=True)
    if len(compiler.steps) > MAX_PLAN_STEPS:
        compiler.problem(("steps",), f"unrolls to {len(compiler.steps)} steps; the limit is {MAX_PLAN_STEPS}")
    compiler.resolve_gotos()
    watches = list(resolve_watch_targets(tuple(watches), compiler.labels))
    voltage = header.safety.voltage
    vmin = voltage.min if voltage.min is not None else -math.inf
    vmax = voltage.max if voltage.max is not None else math.inf
    if not (math.isfinite(vmin) and math.isfinite(vmax)):
        compiler.problem(
            ("safety", "voltage"), "give both min and max: they also set the instrument's compliance"
        )
    elif vmin >= vmax:
        compiler.problem(("safety", "voltage"), f"min ({vmin:g} V) must be below max ({vmax:g} V)")
    current_max = header.safety.current.max if header.safety.current else None
    if current_max is not None:
        for step in compiler.steps:
            if abs(step.current_a) > current_max:
                compiler.problem(
                    ("steps",),
                    f"step at line {step.line} sources {step.current_a * 1e3:.4g} mA, above the safety "
                    f"limit of {current_max * 1e3:.4g} mA; lower the current or raise safety.current.max",
                )
                break
    if compiler.problems:
        raise ProtocolError(_summary(compiler.problems))
    assert compiler.record is not None
    return Plan(
        name=header.name,
        description=header.description.strip(),
        source=source.filename,
        cell=cell,
        pressure_pa=overrides.pressure_pa or header.conditions.pressure,
        temperature_k=overrides.temperature_k or header.conditions.temperature,
        voltage_min_v=vmin,
        voltage_max_v=vmax,
        current_max_a=current_max,
        record=compiler.record,
        watches=tuple(watches),
        steps=tuple(compiler.steps),
        results=tuple(header.results),
    )


def _summary(problems: list[str]) -> str:
    if len(problems) == 1:
        return problems[0]
    return f"{len(problems)} problems:\n  " + "\n  ".join(problems)


def _record_rule(record: model.Record) -> RecordRule:
    return RecordRule(record.sample, record.every, record.dv, record.di, record.poll)


def compiler_watch(compiler: _Compiler, name: str, watch: Any) -> Watch:
    """Compile one watch; its goto target is resolved once all labels are known."""
    params = {k: v for k, v in watch.model_dump().items() if k not in ("type", "action")}
    action = compiler.action(("watch", name, "action"), watch.action)
    return Watch(name=name, type=watch.type, params=params, action=action)


def _si_or_text(text: Any) -> Any:
    try:
        return units.parse(text, _guess_kind(text))
    except units.UnitError:
        return text


def _guess_kind(text: Any) -> units.Kind:
    for kind in ("current_density", "current", "areal_charge", "time", "voltage", "pressure", "temperature"):
        try:
            units.parse(text, kind)  # type: ignore[arg-type]
            return kind  # type: ignore[return-value]
        except units.UnitError:
            continue
    raise units.UnitError(f"cannot read {text!r} as a quantity; write e.g. '0.1 mA/cm^2'")


def _fields(step: PlanStep) -> dict[str, Any]:
    return {name: getattr(step, name) for name in step.__slots__}  # type: ignore[attr-defined]


def resolve_watch_targets(plan_watches: tuple[Watch, ...], labels: dict[str, int]) -> tuple[Watch, ...]:
    """Watches with goto actions pointing at step indexes."""
    return tuple(
        Watch(w.name, w.type, w.params, Action("goto", labels[w.action.label], w.action.label))
        if w.action.kind == "goto" and w.action.label in labels
        else w
        for w in plan_watches
    )
