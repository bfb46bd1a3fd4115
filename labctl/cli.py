"""The `labctl` command: run, validate and simulate.

Every error a user can cause ends as one line on stderr saying what to do, and a non-zero exit
status; a traceback means a bug in labctl. Heavy imports happen inside the commands so that
`labctl --help` stays fast.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_ALARM, EXIT_ABORTED = 0, 1, 2, 3, 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="labctl", description="Run solid-state battery tests unattended, on instruments or simulators."
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv: wire traffic)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser("run", help="run a protocol (on simulators with --sim)")
    run.add_argument("protocol", type=Path, help="protocol file, e.g. protocols/ccd.yaml")
    where = run.add_mutually_exclusive_group()
    where.add_argument("--sim", action="store_true", help="run on simulated instruments in simulated time")
    where.add_argument("--station", type=Path, help="station file (TOML) naming the real instruments")
    run.add_argument("--out", type=Path, help="run directory (default: runs/<time>-<protocol>/)")
    run.add_argument(
        "--seed", type=int, default=1, help="seed of the simulation's random processes (default 1)"
    )
    run.add_argument(
        "--rig",
        choices=["screw", "pneumatic"],
        help="with --sim: the simulated stack-pressure rig, a screw (default) or a pneumatic cylinder",
    )
    run.add_argument("--quiet", action="store_true", help="no progress line")
    _add_overrides(run)

    resume = commands.add_parser(
        "resume",
        help="continue a crashed run (kill -9, power cut) from its last checkpoint, in its directory",
    )
    resume.add_argument(
        "run_dir", type=Path, help="the crashed run's directory, e.g. runs/20261121-120000-ccd"
    )
    where = resume.add_mutually_exclusive_group()
    where.add_argument(
        "--sim", action="store_true", help="a simulated run: its bench continues from its state"
    )
    where.add_argument(
        "--station", type=Path, help="station file (TOML); default: the station stored with the run"
    )
    resume.add_argument("--quiet", action="store_true", help="no progress line")

    validate = commands.add_parser("validate", help="check a protocol file and summarise its plan")
    validate.add_argument("protocol", type=Path)
    _add_overrides(validate)

    report = commands.add_parser("report", help="write plots and a summary of a run (RUN_DIR/report/)")
    report.add_argument("run_dir", type=Path, help="a run directory, e.g. runs/20261121-120000-ccd")

    export = commands.add_parser("export", help="export a run's samples and spectra")
    export.add_argument("run_dir", type=Path)
    export.add_argument(
        "--format",
        choices=["csv", "parquet", "bdf"],
        default="csv",
        help="csv, parquet, or bdf (Battery Data Format column names)",
    )
    export.add_argument("--out", type=Path, help="output directory (default RUN_DIR/export/)")

    forward = commands.add_parser(
        "forward",
        help="send a run's journal to InfluxDB from where it left off (token: LABCTL_INFLUX_TOKEN)",
    )
    forward.add_argument("run_dir", type=Path)
    forward.add_argument("--url", help="server, e.g. http://influx:8086 (default LABCTL_INFLUX_URL)")
    forward.add_argument("--org", help="organization (default LABCTL_INFLUX_ORG)")
    forward.add_argument("--bucket", help="bucket (default LABCTL_INFLUX_BUCKET)")
    forward.add_argument("--lab", help="value of the lab tag (default LABCTL_INFLUX_LAB or 'lab')")

    _add_agent_commands(commands)

    sim = commands.add_parser("sim", help="simulated instruments")
    sim_commands = sim.add_subparsers(dest="sim_command", metavar="SIM_COMMAND")
    serve = sim_commands.add_parser("serve", help="serve a simulated instrument on a TCP port, in real time")
    serve.add_argument(
        "instrument",
        choices=["keithley2450", "emstat4", "rig", "alicat", "eurotherm"],
        help="which instrument (rig = Mark-10 gauge on PORT + Zaber actuator on PORT+1)",
    )
    serve.add_argument("--port", type=int, default=5025, help="TCP port (default 5025, the SCPI raw socket)")
    serve.add_argument(
        "--pty", action="store_true", help="emstat4: serve on a pseudo-terminal instead of TCP"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--seed", type=int, default=1)
    _add_overrides(serve)
    return parser


def _add_agent_commands(commands: Any) -> None:
    """agent, submit, status, control: the bench PCs and the operators meet on an MQTT broker."""
    agent = commands.add_parser(
        "agent", help="run this bench PC's stations and obey commands from the broker (docs/agents.md)"
    )
    agent.add_argument("--config", type=Path, required=True, help="bench file (TOML), e.g. bench.toml")
    broker_help = "broker HOST or HOST:PORT (default LABCTL_MQTT_HOST/PORT); credentials from LABCTL_MQTT_*"

    submit = commands.add_parser("submit", help="start a protocol on a station through its agent")
    submit.add_argument("protocol", type=Path, help="protocol file; validated here before it is sent")
    submit.add_argument("--station", required=True, help="station name, as in the agent's bench file")
    submit.add_argument("--seed", type=int, help="seed of a simulated station (default: the agent's)")
    status = commands.add_parser("status", help="a table of every station the broker knows")
    status.add_argument("--json", action="store_true", help="print the raw statuses as JSON")
    status.add_argument("--wait", type=float, default=1.0, help="seconds to collect statuses (default 1)")
    control = commands.add_parser("control", help="pause, resume, abort or mark the run on a station")
    control.add_argument("action", choices=["pause", "resume", "abort", "mark"])
    control.add_argument("--station", required=True)
    control.add_argument("--note", help="the mark's text, or why (pause/abort)")
    tui = commands.add_parser(
        "tui", help="watch and operate the stations in a terminal UI (a local bench file, or a lab's broker)"
    )
    tui.add_argument("--config", type=Path, help="run this bench file's agent inside the UI (no broker)")
    tui.add_argument(
        "--protocols", type=Path, default=Path("protocols"), help="folder the start picker lists"
    )
    for sub in (submit, status, control, tui):
        sub.add_argument("--broker", help=broker_help)
        sub.add_argument("--lab", help="lab name in the topics (default LABCTL_MQTT_LAB)")
    for sub in (submit, control):
        sub.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the reply")


def _add_overrides(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("cell and conditions (override the protocol's)")
    group.add_argument("--pressure", help='stack pressure, e.g. "5 MPa"')
    group.add_argument("--temperature", help='temperature, e.g. "80 degC"')
    group.add_argument("--material", help="solid electrolyte, e.g. Li6PS5Cl, Li3PS4, Li10GeP2S12")
    group.add_argument("--thickness", help='separator thickness, e.g. "0.5 mm"')
    group.add_argument("--area", help='cell area, e.g. "0.785 cm^2"')


def _overrides(args: argparse.Namespace) -> Any:
    from labctl import units
    from labctl.errors import UnitError
    from labctl.protocol import Overrides

    def value(option: str, kind: units.Kind) -> float | None:
        text = getattr(args, option)
        if text is None:
            return None
        try:
            return units.parse(text, kind)
        except UnitError as exc:
            raise UnitError(f"--{option}: {exc}") from None

    return Overrides(
        pressure_pa=value("pressure", "pressure"),
        temperature_k=value("temperature", "temperature"),
        material=args.material,
        thickness_m=value("thickness", "length"),
        area_m2=value("area", "area"),
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `labctl` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.version:
        from labctl import __version__

        print(f"labctl {__version__}")
        return EXIT_OK
    if args.command is None or (args.command == "sim" and args.sim_command is None):
        parser.print_help()
        return EXIT_USAGE
    from drivers.errors import InstrumentError
    from labctl.errors import LabctlError

    try:
        if args.command == "run":
            return _run(args)
        if args.command == "validate":
            return _validate(args)
        if args.command == "resume":
            return _resume(args)
        if args.command == "report":
            return _report(args)
        if args.command == "export":
            return _export(args)
        if args.command == "forward":
            return _forward(args)
        if args.command in ("agent", "submit", "status", "control"):
            return {"agent": _agent, "submit": _submit, "status": _status, "control": _control}[args.command](
                args
            )
        if args.command == "tui":
            return _tui(args)
        return _serve(args)
    except (LabctlError, InstrumentError) as exc:
        print(f"labctl: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("labctl: interrupted before the run started; no instrument was driven", file=sys.stderr)
        return EXIT_ABORTED
    except BrokenPipeError:  # `labctl validate … | head`: the reader left, nothing to report
        sys.stderr.close()
        return EXIT_OK


def _validate(args: argparse.Namespace) -> int:
    from labctl.display import plan_summary
    from labctl.protocol import compile_file

    plan, _ = compile_file(args.protocol, _overrides(args))
    print(plan_summary(plan))
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    from labctl.analysis.report import write_report

    summary = write_report(args.run_dir)
    figures = sorted(p.name for p in summary.parent.glob("*.png"))
    print(f"report: {summary}" + (f" (figures: {', '.join(figures)})" if figures else ""))
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    from labctl.data.export import export_run

    for path in export_run(args.run_dir, args.format, args.out):
        print(path)
    return EXIT_OK


def _forward(args: argparse.Namespace) -> int:
    from labctl.data.influx import InfluxSettings, forward_run_dir

    settings = InfluxSettings.from_env(url=args.url, org=args.org, bucket=args.bucket, lab=args.lab)
    try:
        lines = asyncio.run(forward_run_dir(args.run_dir, settings))
    except KeyboardInterrupt:
        print("labctl: forwarding interrupted; run the command again to continue", file=sys.stderr)
        return EXIT_ABORTED
    print(f"forwarded {lines} lines to {settings.public_url} (bucket {settings.bucket}); caught up")
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from labctl.config import load_station_config
    from labctl.data import Bus
    from labctl.display import ProgressLine, final_summary
    from labctl.errors import ConfigError
    from labctl.protocol import compile_file
    from labctl.session import run_blocking, run_protocol

    plan, text = compile_file(args.protocol, _overrides(args))
    if not args.sim and args.station is None:
        raise ConfigError("say where to run: --sim for simulated instruments, or --station bench.toml")
    if args.rig is not None and not args.sim:
        raise ConfigError("--rig chooses a simulated rig (with --sim); a station file sets [rig] type")
    station = None if args.sim else load_station_config(args.station)
    bus = Bus()
    progress = ProgressLine(plan, enabled=not args.quiet)
    bus.subscribe(progress.on_record)

    interactive = not args.sim and sys.stdin.isatty()

    def abort_on_signals(runner: Any) -> None:
        # Ctrl-C or SIGTERM ends the run through the engine, so the station is made safe and the
        # run directory still gets its result; until the runner exists, the default applies.
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, runner.abort)
        if interactive:  # Enter resumes a paused run (a `wait` step or an alarm)
            loop.add_reader(sys.stdin.fileno(), lambda: sys.stdin.readline() and runner.resume())
            bus.subscribe(lambda record: _announce_pause(record))

    async def go() -> Any:
        progress.start()
        try:
            return await run_protocol(
                plan,
                text,
                simulate=args.sim,
                station_config=station,
                seed=args.seed,
                out=args.out,
                bus=bus,
                rig=args.rig or "screw",
                on_start=progress.announce,
                on_runner=abort_on_signals,
                interactive=interactive,
            )
        finally:
            await progress.stop()

    report = run_blocking(go())
    print(final_summary(plan, report))
    state = report.outcome.state.value
    if state == "alarm" or report.outcome.unsafe:
        return EXIT_ALARM
    return {"done": EXIT_OK, "aborted": EXIT_ABORTED}.get(state, EXIT_ERROR)


def _resume(args: argparse.Namespace) -> int:
    """Continue a crashed run where its last checkpoint says (docs/reliability.md)."""
    from labctl.config import load_station_config
    from labctl.data import Bus
    from labctl.display import ProgressLine, final_summary
    from labctl.session import read_crashed_run, resume_protocol, run_blocking

    crashed = read_crashed_run(args.run_dir)
    station = load_station_config(args.station) if args.station is not None else None
    bus = Bus()
    progress = ProgressLine(crashed.plan, enabled=not args.quiet)
    bus.subscribe(progress.on_record)
    interactive = not args.sim and sys.stdin.isatty()
    where = crashed.checkpoint
    print(
        f"labctl: resuming {args.run_dir} at step {where.step}"
        + (f" ({where.progress.elapsed_s:.0f} s into it)" if where.started and where.progress else ""),
        file=sys.stderr,
    )

    def abort_on_signals(runner: Any) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, runner.abort)

    async def go() -> Any:
        progress.start()
        try:
            return await resume_protocol(
                crashed,
                simulate=args.sim,
                station_config=station,
                bus=bus,
                on_runner=abort_on_signals,
                interactive=interactive,
            )
        finally:
            await progress.stop()

    report = run_blocking(go())
    print(final_summary(crashed.plan, report))
    state = report.outcome.state.value
    if state == "alarm" or report.outcome.unsafe:
        return EXIT_ALARM
    return {"done": EXIT_OK, "aborted": EXIT_ABORTED}.get(state, EXIT_ERROR)


def _agent(args: argparse.Namespace) -> int:
    from labctl.agent import Agent, AgentConfig

    agent = Agent(AgentConfig.load(args.config))

    async def serve() -> None:
        # SIGTERM/SIGINT: every run is aborted through its engine (station safe, result written),
        # the forwarders get a bounded time to catch up, and the agent exits 0.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await agent.serve(stop)

    names = ", ".join(agent.stations)
    print(f"labctl agent: stations {names}; runs in {agent.runs_dir}; stop with Ctrl-C", file=sys.stderr)
    asyncio.run(serve())
    print("labctl agent: stopped", file=sys.stderr)
    return EXIT_OK


def _mqtt_settings(args: argparse.Namespace) -> Any:
    """Broker settings from LABCTL_MQTT_* and --broker/--lab; credentials only from the environment."""
    from labctl.data.mqtt import MqttSettings
    from labctl.errors import ConfigError

    overrides: dict[str, Any] = {"lab": args.lab}
    if args.broker:
        host, _, port = args.broker.rpartition(":") if ":" in args.broker else (args.broker, "", "")
        if port and not port.isdigit():
            raise ConfigError(f"--broker {args.broker}: write HOST or HOST:PORT, e.g. broker.lab:1883")
        overrides.update(host=host, port=int(port) if port else None)
    return MqttSettings.from_env(**overrides)


def _send(args: argparse.Namespace, action: str, **fields: Any) -> int:
    """Send one command to a station's agent and print its reply; non-zero if refused or unanswered."""
    import uuid

    from labctl.data.mqtt import Command, LabClient

    settings = _mqtt_settings(args)
    given = {key: value for key, value in fields.items() if value is not None}
    command = Command(id=uuid.uuid4().hex, action=action, **given)

    async def send() -> Any:
        async with LabClient(settings) as client:
            return await client.send(args.station, command, timeout_s=args.timeout)

    reply = asyncio.run(send())  # no reply: NoReplyError, a LabctlError saying what the status suggests
    stream = sys.stdout if reply.ok else sys.stderr
    print(f"{args.station}: {'ok' if reply.ok else 'refused'}: {reply.message}", file=stream)
    return EXIT_OK if reply.ok else EXIT_ERROR


def _submit(args: argparse.Namespace) -> int:
    from labctl.protocol import compile_file

    _, text = compile_file(args.protocol)  # a bad protocol never leaves this machine
    return _send(args, "start", protocol=text, seed=args.seed)


def _control(args: argparse.Namespace) -> int:
    from labctl.errors import ConfigError

    if args.action == "mark" and not args.note:
        raise ConfigError("mark needs --note TEXT")
    if args.note is not None and args.action in ("pause", "resume"):
        raise ConfigError("--note goes with mark and abort")
    return _send(args, args.action, note=args.note)


def _tui(args: argparse.Namespace) -> int:
    """The terminal UI on a local agent (--config) or on a lab's broker (--broker / LABCTL_MQTT_*)."""
    from labctl.errors import ConfigError

    if args.config is not None and (args.broker or args.lab):
        raise ConfigError("labctl tui: --config runs a local agent; --broker/--lab watch a lab: give one")
    try:
        from labctl.tui.app import LabApp  # Textual loads only here, so `labctl --help` stays fast
    except ImportError as exc:
        raise ConfigError(f"labctl tui needs Textual: pip install 'labctl' ({exc})") from exc
    from labctl.tui.connection import LocalConnection, MqttConnection

    if args.config is not None:
        from labctl.agent import AgentConfig

        connection: Any = LocalConnection(AgentConfig.load(args.config))
    else:
        connection = MqttConnection(_mqtt_settings(args))
    from textual.logging import TextualHandler

    # Log records written to the terminal would scribble over the UI: send them to Textual's log
    # (`textual console`) while it runs.
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = [TextualHandler()]
    try:
        LabApp(connection, protocols=args.protocols).run()
    finally:
        root.handlers = saved
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    import json

    from labctl.data.mqtt import LabClient

    settings = _mqtt_settings(args)

    async def collect() -> dict[str, dict[str, Any]]:
        async with LabClient(settings) as client:
            return await client.statuses(wait_s=args.wait)

    statuses = asyncio.run(collect())
    if args.json:
        print(json.dumps(statuses, indent=2, sort_keys=True, default=str))
        return EXIT_OK
    if not statuses:
        print(f"no station has reported to {settings.host}:{settings.port} (lab {settings.lab})")
        return EXIT_OK
    print(_status_table(statuses))
    return EXIT_OK


def _status_table(statuses: dict[str, dict[str, Any]]) -> str:
    """One row per station: state, protocol, step, elapsed, V, I, stack pressure, temperature, alarm."""

    def number(status: dict[str, Any], key: str, scale: float, digits: str, offset: float = 0.0) -> str:
        value = status.get(key)
        if value is None and isinstance(status.get("values"), dict):
            value = status["values"].get(key)
        return format(value * scale + offset, digits) if isinstance(value, int | float) else "-"

    def elapsed(status: dict[str, Any]) -> str:
        seconds = status.get("elapsed_s")
        if not isinstance(seconds, int | float):
            return "-"
        minutes, secs = divmod(int(seconds), 60)
        return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"

    header = ("STATION", "STATE", "PROTOCOL", "STEP", "ELAPSED", "V", "I mA", "P MPa", "T °C")
    header += ("ALARM",)
    rows = [header]
    for name in sorted(statuses):
        status = statuses[name]
        step = status.get("step")
        described = status.get("step_description") or ""
        rows.append(
            (
                name,
                str(status.get("state", "?")),
                str(status.get("protocol") or "-"),
                "-" if step is None else f"{step} {described}".strip()[:32],
                elapsed(status),
                number(status, "voltage_v", 1.0, ".4f"),
                number(status, "current_a", 1e3, ".4g"),
                number(status, "pressure_pa", 1e-6, ".3g"),
                number(status, "temperature_k", 1.0, ".1f", -273.15),
                str(status.get("alarm") or ""),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)
    return "\n".join(line.rstrip() for line in lines)


def _announce_pause(record: object) -> None:
    from labctl.data import Event, EventKind

    if isinstance(record, Event) and record.kind is EventKind.PAUSED:
        print(
            f"\nlabctl: paused: {record.data.get('message')} (the station is safe). "
            "Press Enter to resume, Ctrl-C to abort.",
            file=sys.stderr,
        )


def _serve(args: argparse.Namespace) -> int:
    import asyncio

    from labctl.simserve import serve

    try:
        asyncio.run(serve(args.instrument, args.host, args.port, args.seed, _overrides(args), pty=args.pty))
    except KeyboardInterrupt:
        pass
    return EXIT_OK
