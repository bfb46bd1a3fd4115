"""Protocol file → validated model → Plan, collecting every problem with its file:line.

Validation is complete before any instrument moves: unknown fields and step kinds (with the
nearest valid name), quantities of the wrong dimension, undefined parameters, labels and watches,
loops that cannot end. Loops are unrolled here (a `repeat until` up to its `max`, with a `check`
step after each iteration), so the engine interprets plain records and evaluates no expressions.
Overrides from the command line (pressure, temperature, cell) are applied before compiling,
because the cell area turns densities into currents.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from labctl import units
from labctl.errors import ProtocolError
from labctl.protocol import model
from labctl.protocol.loader import Path_, SourceMap, format_path, load_file, load_text
from labctl.protocol.plan import Action, CellSpec, Check, EisSpec, End, Plan, PlanStep, RecordRule, Watch

MAX_PLAN_STEPS = 200_000
ACTIONS = ("next", "stop", "alarm", "record")
SECONDS_PER_HOUR = 3600.0
_LOOP_END = "\x00loop-end-"  # internal goto labels for `repeat until`; cannot clash with a user's


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
    cell: CellSpec = field(default_factory=lambda: CellSpec("symmetric", "Li6PS5Cl", 0.785e-4, 5e-4))
    record: RecordRule | None = None
    current_max_a: float | None = None
    watch_names: tuple[str, ...] = ()
    problems: list[str] = field(default_factory=list)
    steps: list[PlanStep] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)
    gotos: list[tuple[Path_, str]] = field(default_factory=list)
    loops: int = 0

    # --- reporting ------------------------------------------------------------------------------

    def problem(self, path: Path_, message: str) -> None:
        self.problems.append(f"{self.source.where(path)}: {format_path(path)}: {message}")

    def validation_problems(self, path: Path_, error: ValidationError, cls: type[BaseModel]) -> None:
        """Report pydantic's errors with file:line; a misspelt field is one problem, not two."""
        items = error.errors()
        suggested: set[tuple[Any, ...]] = set()
        messages: list[tuple[Path_, str]] = []
        for item in items:
            where = (*path, *item["loc"])
            message = item["msg"].removeprefix("Value error, ")
            if item["type"] == "extra_forbidden":
                name = str(item["loc"][-1])
                known = _fields_at(cls, item["loc"][:-1])
                guess = difflib.get_close_matches(name, known, n=1)
                hint = f"; did you mean '{guess[0]}'?" if guess else f"; valid fields: {', '.join(known)}"
                message = f"unknown field '{name}'{hint}"
                if guess:
                    suggested.add((*item["loc"][:-1], guess[0]))
            elif item["type"] == "missing":
                message = f"'{item['loc'][-1]}' is required here"
            elif item["type"] == "union_tag_invalid":
                message = item["msg"]
            messages.append((where, message))
        for item, (where, message) in zip(items, messages, strict=True):
            if item["type"] == "missing" and tuple(item["loc"]) in suggested:
                continue  # the unknown field next to it is this one, misspelt
            self.problem(where, message)

    # --- steps ------------------------------------------------------------------------------------

    def compile_steps(self, items: Any, path: Path_, context: dict[str, Any], top_level: bool) -> None:
        if not isinstance(items, list):
            self.problem(
                path, "steps must be a list, each item one step such as '- rest: {until: {time: 1 h}}'"
            )
            return
        for i, item in enumerate(items):
            if len(self.steps) > MAX_PLAN_STEPS:
                return
            item_path = (*path, i)
            if not isinstance(item, dict) or len(item) != 1:
                kinds = ", ".join(model.STEP_KINDS)
                self.problem(item_path, f"each step is one mapping with a single kind: {kinds}")
                continue
            kind, body = next(iter(item.items()))
            if kind not in model.STEP_KINDS:
                guess = difflib.get_close_matches(kind, model.STEP_KINDS, n=1)
                hint = (
                    f"did you mean '{guess[0]}'?" if guess else f"valid kinds: {', '.join(model.STEP_KINDS)}"
                )
                self.problem(item_path, f"unknown step kind '{kind}'; {hint}")
                continue
            body_path = (*item_path, kind)
            cls = model.STEP_KINDS[kind]
            try:
                parsed = cls.model_validate(body if body is not None else {})
            except ValidationError as exc:
                self.validation_problems(body_path, exc, cls)
                continue
            self.label(parsed, body_path, top_level)
            if isinstance(parsed, model.RepeatStep):
                self.compile_repeat(parsed, body_path, context)
            elif isinstance(parsed, model.SweepStep):
                self.compile_sweep(parsed, body_path, context)
            else:
                self.compile_leaf(kind, parsed, body_path, context)

    def label(self, parsed: Any, path: Path_, top_level: bool) -> None:
        label = getattr(parsed, "label", None)
        if label is None:
            return
        if not top_level:
            self.problem(
                (*path, "label"), "labels inside a loop would repeat; put the label on a top-level step"
            )
        elif label in self.labels:
            self.problem((*path, "label"), f"label '{label}' is used twice")
        else:
            self.labels[label] = len(self.steps)

    def compile_repeat(self, repeat: model.RepeatStep, path: Path_, context: dict[str, Any]) -> None:
        iterations = repeat.times or repeat.max or 1
        contexts = [{**context, "cycle": cycle} for cycle in range(1, iterations + 1)]
        self.compile_loop(repeat.steps, path, contexts, repeat.until, "cycle")

    def compile_loop(
        self,
        steps: list[Any],
        path: Path_,
        contexts: list[dict[str, Any]],
        until: dict[str, Any] | None,
        counter: str,
    ) -> None:
        """Unroll a loop body once per context; with `until`, a check after each iteration can end it."""
        check = self.loop_check(until, path) if until is not None else None
        end_label = f"{_LOOP_END}{self.loops}"
        self.loops += 1
        for iteration in contexts:
            self.compile_steps(steps, (*path, "steps"), iteration, False)
            if self.problems or len(self.steps) > MAX_PLAN_STEPS:
                return
            if check is not None:
                self.steps.append(
                    PlanStep(
                        index=len(self.steps),
                        kind="check",
                        description=f"check {check.condition} · {counter} {iteration[counter]}",
                        line=self.source.line_of((*path, "until")),
                        current_a=0.0,
                        density_a_m2=None,
                        ends=(),
                        record=self.record_rule(None),
                        context=_plain(iteration),
                        check=check,
                        label=end_label,
                    )
                )
        self.labels[end_label] = len(self.steps)

    def loop_check(self, until: dict[str, Any], path: Path_) -> Check | None:
        where = (*path, "until")
        if len(until) != 1:
            self.problem(where, f"name one condition: {', '.join(model.REPEAT_CONDITIONS)}")
            return None
        condition, raw = next(iter(until.items()))
        if condition not in model.REPEAT_CONDITIONS:
            guess = difflib.get_close_matches(condition, model.REPEAT_CONDITIONS, n=1)
            hint = f"did you mean '{guess[0]}'?" if guess else f"valid: {', '.join(model.REPEAT_CONDITIONS)}"
            self.problem((*where, condition), f"unknown loop condition '{condition}'; {hint}")
            return None
        if condition == "detector":
            if raw not in self.watch_names:
                self.problem((*where, condition), self.unknown_watch(raw))
                return None
            return Check(condition, raw)
        try:
            return Check(condition, units.parse(raw, "dimensionless"))
        except units.UnitError as exc:
            self.problem((*where, condition), str(exc))
            return None

    def compile_sweep(self, sweep: model.SweepStep, path: Path_, context: dict[str, Any]) -> None:
        values = self.sweep_values(sweep, (*path, "values"))
        if values is None:
            return
        if not values:
            self.problem((*path, "values"), "the sweep has no values")
        contexts = [{**context, sweep.parameter: value} for value in values]
        self.compile_loop(sweep.steps, path, contexts, sweep.until, sweep.parameter)

    def sweep_values(self, sweep: model.SweepStep, path: Path_) -> list[Any] | None:
        """Sweep values stay raw text until a step uses them, where their dimension is known."""
        spec = sweep.values
        if isinstance(spec, list):
            return [("raw", v, (*path, i)) for i, v in enumerate(spec)]
        try:
            kind = _guess_kind(spec.start)
            start, stop = units.parse(spec.start, kind), units.parse(spec.stop, kind)
            if isinstance(spec, model.LinearValues):
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

    def resolve(self, value: Any, kind: units.Kind, path: Path_, context: dict[str, Any]) -> float | None:
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

    def record_rule(self, record: model.Record | None) -> RecordRule:
        if record is not None:
            return _record_rule(record)
        assert self.record is not None
        return self.record

    def source_current(
        self, body: Any, path: Path_, context: dict[str, Any]
    ) -> tuple[float, float | None] | None:
        """(current A, density A/m² or None) from exactly one of density, current, c_rate."""
        given = [name for name in ("density", "current", "c_rate") if getattr(body, name) is not None]
        if len(given) != 1:
            self.problem(
                path, "give exactly one of 'density' (0.1 mA/cm^2), 'current' (1 mA) or 'c_rate' (C/10)"
            )
            return None
        name = given[0]
        if name == "density":
            density = self.resolve(body.density, "current_density", (*path, "density"), context)
            return None if density is None else (units.absolute(density, self.cell.area_m2), density)
        if name == "current":
            current = self.resolve(body.current, "current", (*path, "current"), context)
            return None if current is None else (current, None)
        rate = self.resolve(body.c_rate, "dimensionless", (*path, "c_rate"), context)
        if rate is None:
            return None
        if self.cell.capacity_c_m2 is None:
            self.problem(
                (*path, "c_rate"),
                "a C-rate needs the cell's nominal capacity: set cell.capacity (e.g. 2 mAh/cm^2)",
            )
            return None
        density = rate * self.cell.capacity_c_m2 / SECONDS_PER_HOUR
        return units.absolute(density, self.cell.area_m2), density

    def compile_leaf(self, kind: str, body: Any, path: Path_, context: dict[str, Any]) -> None:
        step: dict[str, Any] = {"current_a": 0.0, "density_a_m2": None, "ends": ()}
        description = kind
        if kind in ("current", "cccv"):
            source = self.source_current(body, path, context)
            if source is None:
                return
            step["current_a"], step["density_a_m2"] = source
            description = f"{kind} " + (
                f"{units.to_ma_per_cm2(source[1]):+.3g} mA/cm²"
                if source[1] is not None
                else f"{source[0] * 1e3:+.3g} mA"
            )
        if kind in ("voltage", "cccv"):
            field_name = "value" if kind == "voltage" else "voltage"
            voltage = self.resolve(getattr(body, field_name), "voltage", (*path, field_name), context)
            if voltage is None:
                return
            step["voltage_v"] = voltage
            # A CC-CV hold starts at its CC current and decays; its limit leaves room for the
            # switch-over (2×), within the safety limit.
            cccv_limit = 2 * abs(step["current_a"])
            if self.current_max_a is not None:
                cccv_limit = min(cccv_limit, self.current_max_a)
            step["current_limit_a"] = (
                cccv_limit if kind == "cccv" else body.current_limit or self.current_max_a
            )
            if step["current_limit_a"] is None:
                self.problem(
                    path, "a voltage step needs a current limit: 'current_limit' or safety.current.max"
                )
                return
            description = (
                f"{kind} {voltage:.4g} V" if kind == "voltage" else f"{description} → {voltage:.4g} V"
            )
        if kind == "eis":
            eis = self.eis(body, path)
            if eis is None:
                return
            step["eis"] = eis
            description = f"eis {eis.mode} {eis.f_start_hz:.3g}–{eis.f_end_hz:.3g} Hz"
        if kind in ("mark", "wait"):
            step["note"] = body.note if kind == "mark" else body.message
            step["timeout_s"] = getattr(body, "timeout", None)
            step["new_cell"] = getattr(body, "new_cell", False)
            description = f"{kind}{' for a new cell' if step['new_cell'] else ''}: {step['note']}"
        if kind == "set":
            setpoints = self.setpoints(body, path, context)
            if setpoints is None:
                return
            step["setpoints"], step["timeout_s"] = setpoints, body.timeout
            description = "set " + ", ".join(
                f"{k}={v:g}" for k, v in setpoints.items() if not k.startswith("settle")
            )
        if kind in ("rest", "current", "voltage", "cccv"):
            ends = self.ends(body.until, (*path, "until"), kind, step["current_a"])
            if ends is None:
                return
            step["ends"] = tuple(ends)
        if "cycle" in context:
            description += f" · cycle {context['cycle']}"
        self.steps.append(
            PlanStep(
                index=len(self.steps),
                kind=kind,
                description=description,  # type: ignore[arg-type]
                line=self.source.line_of(path),
                record=self.record_rule(getattr(body, "record", None)),
                label=getattr(body, "label", None),
                context=_plain(context),
                **step,
            )
        )

    def eis(self, body: model.EISStep, path: Path_) -> EisSpec | None:
        amplitude_kind: units.Kind = "voltage" if body.mode == "potentiostatic" else "current"
        try:
            amplitude = units.parse(body.amplitude, amplitude_kind)
        except units.UnitError as exc:
            self.problem((*path, "amplitude"), f"{exc} ({body.mode} EIS)")
            return None
        dc_is_ocv = body.dc == "ocv"
        try:
            dc = 0.0 if dc_is_ocv else units.parse(body.dc, amplitude_kind)
        except units.UnitError as exc:
            self.problem((*path, "dc"), f"{exc}; or write 'ocv' to excite around the open-circuit voltage")
            return None
        if body.mode == "galvanostatic" and dc_is_ocv:
            dc_is_ocv, dc = False, 0.0  # galvanostatic 'ocv' means zero DC current
        if amplitude <= 0:
            self.problem((*path, "amplitude"), "must be positive")
            return None
        return EisSpec(body.mode, body.start, body.stop, body.per_decade, amplitude, dc, dc_is_ocv)

    def setpoints(self, body: model.SetStep, path: Path_, context: dict[str, Any]) -> dict[str, float] | None:
        if (body.pressure is None) == (body.temperature is None):
            self.problem(path, "set exactly one of 'pressure' (e.g. 5 MPa) or 'temperature' (e.g. 60 degC)")
            return None
        if body.pressure is not None:
            value = self.resolve(body.pressure, "pressure", (*path, "pressure"), context)
            key, rate_kind = "pressure_pa", "pressure_rate"
        else:
            value = self.resolve(body.temperature, "temperature", (*path, "temperature"), context)
            key, rate_kind = "temperature_k", "temperature_rate"
        if value is None:
            return None
        setpoints = {key: value}
        if body.settle is not None:
            try:
                setpoints["settle_rate"] = units.parse(body.settle.rate_below, rate_kind)  # type: ignore[arg-type]
            except units.UnitError as exc:
                self.problem((*path, "settle", "rate_below"), str(exc))
                return None
            setpoints["settle_hold_s"] = body.settle.hold
        if body.rate is not None:
            try:
                setpoints["ramp_rate"] = abs(units.parse(body.rate, rate_kind))  # type: ignore[arg-type]
            except units.UnitError as exc:
                self.problem((*path, "rate"), str(exc))
                return None
            if setpoints["ramp_rate"] == 0:
                self.problem((*path, "rate"), "a ramp rate must be above zero")
                return None
        if body.then == "fixed_gap":
            if key != "pressure_pa":
                self.problem((*path, "then"), "'fixed_gap' is for a pressure set-point")
                return None
            setpoints["fixed_gap"] = 1.0
        return setpoints

    def ends(self, until: Any, path: Path_, kind: str, current_a: float) -> list[End] | None:
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
            end = self.end(condition, raw, entry, cond_path, kind, current_a)
            if end is not None:
                ends.append(end)
        if not entries:
            self.problem(path, "give at least one end condition, e.g. {time: 1 h}")
            return None
        if len(ends) != len(entries):
            return None  # each failed entry was reported already
        return ends

    def end(
        self, condition: str, raw: Any, entry: dict[str, Any], path: Path_, kind: str, current_a: float
    ) -> End | None:
        if condition not in model.END_CONDITIONS:
            guess = difflib.get_close_matches(condition, model.END_CONDITIONS, n=1)
            hint = f"did you mean '{guess[0]}'?" if guess else f"valid: {', '.join(model.END_CONDITIONS)}"
            self.problem(path, f"unknown end condition '{condition}'; {hint}")
            return None
        quantity_kind = model.END_CONDITIONS[condition]
        converted: float | None = None
        if condition.startswith("current") and isinstance(raw, str) and model.C_RATE.match(raw):
            converted = self.c_rate_current(raw, path)  # "current_below: C/50"
            if converted is None:
                return None
        try:
            value: Any = raw if quantity_kind is None else converted or units.parse(raw, quantity_kind)
            debounce = units.parse(entry.get("debounce", "0 s"), "time")
        except units.UnitError as exc:
            self.problem(path, str(exc))
            return None
        if condition == "detector" and value not in self.watch_names:
            self.problem(path, self.unknown_watch(value))
            return None
        if condition == "capacity":
            condition, value = "charge", units.absolute(value, self.cell.area_m2)
        if condition == "charge" and (kind == "rest" or (current_a == 0 and kind != "voltage")):
            self.problem(path, "a step without current never reaches a capacity; end it on time")
            return None
        if condition == "charge" and value <= 0:
            self.problem(path, "must be positive")
            return None
        if condition.startswith("current") and kind in ("rest", "current"):
            self.problem(path, f"a {kind} step holds its current; end it on time, capacity or voltage")
            return None
        if condition.startswith("dvdt") and debounce == 0:
            debounce = 60.0  # dV/dt is judged over a window; the debounce is that window
        return End(condition, value, self.action((*path, "action"), entry.get("action", "next")), debounce)

    def c_rate_current(self, text: str, path: Path_) -> float | None:
        """'C/50' → |current| in A through the nominal capacity (for current ends)."""
        if self.cell.capacity_c_m2 is None:
            self.problem(
                path, "a C-rate needs the cell's nominal capacity: set cell.capacity (e.g. 2 mAh/cm^2)"
            )
            return None
        rate = model._c_rate(text)
        return abs(rate) * self.cell.capacity_c_m2 / SECONDS_PER_HOUR * self.cell.area_m2

    def unknown_watch(self, name: Any) -> str:
        guess = difflib.get_close_matches(str(name), self.watch_names, n=1)
        if guess:
            return f"no watch is named '{name}'; did you mean '{guess[0]}'?"
        return f"no watch is named '{name}'; declare it under 'watch:'"

    def action(self, path: Path_, raw: Any) -> Action:
        if isinstance(raw, model.Goto):
            raw = {"goto": raw.goto}
        if isinstance(raw, str) and raw in ACTIONS:
            return Action(raw)  # type: ignore[arg-type]
        if isinstance(raw, dict) and set(raw) == {"goto"} and isinstance(raw["goto"], str):
            self.gotos.append((path, raw["goto"]))
            return Action("goto", label=raw["goto"])
        self.problem(path, f"action must be one of {', '.join(ACTIONS)} or {{goto: <label>}}, not {raw!r}")
        return Action("next")

    def resolve_gotos(self) -> None:
        users = [label for label in self.labels if not label.startswith(_LOOP_END)]
        for path, label in self.gotos:
            if label not in self.labels or label.startswith(_LOOP_END):
                guess = difflib.get_close_matches(label, users, n=1)
                hint = f"; did you mean '{guess[0]}'?" if guess else "; label a top-level step with 'label:'"
                self.problem(path, f"no step is labelled '{label}'{hint}")
        if self.problems:
            return
        self.steps[:] = [self.targeted(step) for step in self.steps]

    def targeted(self, step: PlanStep) -> PlanStep:
        ends = tuple(replace(end, action=self.target(end.action)) for end in step.ends)
        check = step.check
        label = step.label
        if check is not None:  # a check jumps to the end of its loop, named by its internal label
            check = replace(check, target=self.labels[label or ""])
            label = None
        return replace(step, ends=ends, check=check, label=label)

    def target(self, action: Action) -> Action:
        if action.kind == "goto" and action.label is not None:
            return Action("goto", self.labels[action.label], action.label)
        return action


def _fields_at(cls: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    model_cls: type[BaseModel] | None = cls
    for part in loc:
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


def _plain(context: dict[str, Any]) -> dict[str, Any]:
    """Loop context as plain values: counters, and sweep values in SI."""
    plain: dict[str, Any] = {}
    for name, entry in context.items():
        if name == "cycle":
            plain[name] = entry
        else:
            plain[name] = entry[1] if entry[0] == "si" else _si_or_text(entry[1])
    return plain


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
        compiler.validation_problems((), exc, model.Header)
        if isinstance(data.get("steps"), list):  # still report the steps' problems, with defaults
            compiler.record = _record_rule(model.Record())
            watch = data.get("watch")
            compiler.watch_names = tuple(watch) if isinstance(watch, dict) else ()
            compiler.compile_steps(data["steps"], ("steps",), context={}, top_level=True)
        raise ProtocolError(_summary(compiler.problems)) from None

    cell = header.cell
    compiler.cell = CellSpec(
        kind=cell.kind,
        material=overrides.material or cell.material,
        area_m2=overrides.area_m2 or cell.area,
        thickness_m=overrides.thickness_m or cell.thickness,
        cathode=cell.cathode,
        anode=cell.anode,
        loading_kg_m2=cell.loading,
        capacity_c_m2=cell.capacity,
    )
    compiler.record = _record_rule(header.record)
    compiler.current_max_a = header.safety.current.max if header.safety.current else None
    compiler.watch_names = tuple(header.watch)
    watches = [_watch(compiler, name, watch) for name, watch in header.watch.items()]
    if not header.steps:
        compiler.problem(("steps",), "a protocol needs at least one step")
    compiler.compile_steps(header.steps, ("steps",), context={}, top_level=True)
    if len(compiler.steps) > MAX_PLAN_STEPS:
        compiler.problem(("steps",), f"unrolls to more than {MAX_PLAN_STEPS} steps; shorten the loops")
    compiler.resolve_gotos()
    if not compiler.problems:
        watches = [replace(w, action=compiler.target(w.action)) for w in watches]
    vmin, vmax = _safety_window(compiler, header.safety)
    if compiler.current_max_a is not None:
        for step in compiler.steps:
            if abs(step.current_a) > compiler.current_max_a:
                compiler.problem(
                    ("steps",),
                    f"step at line {step.line} sources {step.current_a * 1e3:.4g} mA, above the safety "
                    f"limit of {compiler.current_max_a * 1e3:.4g} mA; "
                    "lower the current or raise safety.current.max",
                )
                break
    if compiler.problems:
        raise ProtocolError(_summary(compiler.problems))
    assert compiler.record is not None
    return Plan(
        name=header.name,
        description=header.description.strip(),
        source=source.filename,
        cell=compiler.cell,
        pressure_pa=overrides.pressure_pa or header.conditions.pressure,
        temperature_k=overrides.temperature_k or header.conditions.temperature,
        voltage_min_v=vmin,
        voltage_max_v=vmax,
        current_max_a=compiler.current_max_a,
        pressure_window_pa=_window(header.safety.pressure),
        temperature_window_k=_window(header.safety.temperature),
        record=compiler.record,
        watches=tuple(watches),
        steps=tuple(compiler.steps),
        results=tuple(header.results),
    )


def _safety_window(compiler: _Compiler, safety: model.Safety) -> tuple[float, float]:
    vmin = safety.voltage.min if safety.voltage.min is not None else -math.inf
    vmax = safety.voltage.max if safety.voltage.max is not None else math.inf
    if not (math.isfinite(vmin) and math.isfinite(vmax)):
        compiler.problem(
            ("safety", "voltage"), "give both min and max: they also set the instrument's compliance"
        )
    elif vmin >= vmax:
        compiler.problem(("safety", "voltage"), f"min ({vmin:g} V) must be below max ({vmax:g} V)")
    for step in compiler.steps:
        if step.voltage_v is not None and not vmin <= step.voltage_v <= vmax:
            compiler.problem(
                ("steps",),
                f"step at line {step.line} holds {step.voltage_v:g} V, outside the safety window "
                f"{vmin:g}..{vmax:g} V",
            )
            break
    return vmin, vmax


def _window(limits: Any) -> tuple[float, float] | None:
    if limits is None:
        return None
    low = limits.min if limits.min is not None else -math.inf
    high = limits.max if limits.max is not None else math.inf
    return low, high


def _summary(problems: list[str]) -> str:
    if len(problems) == 1:
        return problems[0]
    return f"{len(problems)} problems:\n  " + "\n  ".join(problems)


def _record_rule(record: model.Record) -> RecordRule:
    return RecordRule(record.sample, record.every, record.dv, record.di, record.poll)


def _watch(compiler: _Compiler, name: str, watch: Any) -> Watch:
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
    for kind in (
        "current_density",
        "current",
        "areal_charge",
        "time",
        "voltage",
        "pressure",
        "temperature",
        "frequency",
        "dimensionless",
    ):
        try:
            units.parse(text, kind)  # type: ignore[arg-type]
            return kind  # type: ignore[return-value]
        except units.UnitError:
            continue
    raise units.UnitError(f"cannot read {text!r} as a quantity; write e.g. '0.1 mA/cm^2'")
