"""Real servers for integration tests: VictoriaMetrics (InfluxDB v2 write API) and a Mosquitto broker.

Each runs as a child process on a free loopback port, is ready when it answers (never after a sleep),
and is stopped by its PID. Tests can `stop()` and `start()` it mid-test; it comes back on the same
port with the same data directory. A missing binary skips the test with the command that installs it,
except under CI (CI=true), where it fails: CI must run these tests.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

# A lab broker's users and ACL for the MQTT tests: the agent of bench 1, two operators, a viewer.
LAB_USERS = {"bench1": "bench-pw", "alice": "alice-pw", "bob": "bob-pw", "viewer": "viewer-pw"}
LAB_ACL = """\
# the agent of bench 1
user bench1
topic write labctl/lab/+/status
topic write labctl/lab/+/telemetry
topic write labctl/lab/+/event
topic read labctl/lab/+/cmd
topic readwrite labctl/lab/agents/bench1/status
topic write labctl/lab/clients/+/reply

# operators
user alice
topic write labctl/lab/+/cmd
topic read labctl/lab/#

user bob
topic write labctl/lab/+/cmd
topic read labctl/lab/#

# a viewer: reads, never commands
user viewer
topic read labctl/lab/#

# every client reads its own reply topic
pattern read labctl/+/clients/%c/reply
"""


INSTALL = "apt-get install -y victoria-metrics mosquitto mosquitto-clients"
READY_DEADLINE_S = 15.0


def require_binary(name: str) -> str:
    """The binary's path; skip (fail under CI=true) when it is not installed."""
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
    )
    if path is None:
        message = f"{name} is not installed; install the test servers with `{INSTALL}` (as root)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """One server child process: start, wait until ready, stop by PID, restart on the same port."""

    name = "server"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.log_path = workdir / f"{self.name}.log"
        self._process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server and return once it answers (fails after READY_DEADLINE_S)."""
        assert not self.running, f"{self.name} is already running"
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + READY_DEADLINE_S
        while not self.ready():
            if self._process.poll() is not None:
                pytest.fail(f"{self.name} exited with {self._process.returncode}:\n{self._log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"{self.name} not ready within {READY_DEADLINE_S} s:\n{self._log_tail()}")
            time.sleep(0.02)  # polling for readiness, not waiting for time

    def stop(self) -> None:
        """Stop gracefully by PID (SIGTERM: the server finishes requests in flight), SIGKILL if it hangs."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _log_tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])


class VictoriaMetrics(ServerProcess):
    """VictoriaMetrics single-node: accepts the InfluxDB v2 write API at /api/v2/write."""

    name = "victoria-metrics"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.binary = require_binary("victoria-metrics")
        self.data_dir = workdir / "vm-data"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            self.binary,
            f"-httpListenAddr=127.0.0.1:{self.port}",
            f"-storageDataPath={self.data_dir}",
            "-search.latencyOffset=0s",
            "-retentionPeriod=100y",
        ]

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1) as answer:
                return answer.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def export(self, match: str = '{__name__!=""}') -> list[dict[str, Any]]:
        """Every series matching `match`, after a flush: [{"metric": labels, "values", "timestamps"}]."""
        urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10).close()
        query = urllib.parse.urlencode({"match[]": match, "start": "0"})
        with urllib.request.urlopen(f"{self.url}/api/v1/export?{query}", timeout=30) as answer:
            return [json.loads(line) for line in answer.read().splitlines() if line.strip()]

    def counts(self, match: str = '{__name__!=""}') -> Counter[str]:
        """Points per metric name (VictoriaMetrics names an Influx field `<measurement>_<field>`)."""
        counts: Counter[str] = Counter()
        for series in self.export(match):
            counts[series["metric"]["__name__"]] += len(series["values"])
        return counts


class Mosquitto(ServerProcess):
    """A Mosquitto broker on a loopback port; anonymous by default, or with users, an ACL and TLS.

    Args:
        workdir: where the configuration, password file, log and certificates live.
        extra_config: appended to mosquitto.conf.
        users: name → password; turns anonymous access off and writes a password file with
            `mosquitto_passwd -b` (the broker's own tool, so the hashing is the real one).
        acl: the ACL file's text (needs `users`).
        tls: (CA, server certificate, server key) paths: adds a TLS listener on `tls_port`.
    """

    name = "mosquitto"

    def __init__(
        self,
        workdir: Path,
        extra_config: str = "",
        *,
        users: dict[str, str] | None = None,
        acl: str | None = None,
        tls: tuple[Path, Path, Path] | None = None,
    ) -> None:
        super().__init__(workdir)
        self.binary = require_binary("mosquitto")
        self.config_path = workdir / "mosquitto.conf"
        self.tls_port = free_port() if tls else None
        lines = [
            "per_listener_settings false",
            f"listener {self.port} 127.0.0.1",
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "log_type debug" if os.environ.get("LABCTL_MOSQUITTO_DEBUG") else "",
            # Started as root, Mosquitto drops to user "mosquitto", who cannot read our 0600 files.
            f"user {pwd.getpwuid(os.geteuid()).pw_name}",
        ]
        if users:
            passwd = require_binary("mosquitto_passwd")
            password_file = workdir / "mosquitto.passwd"
            password_file.unlink(missing_ok=True)
            for user, password in users.items():
                create = ["-c"] if not password_file.exists() else []
                subprocess.run([passwd, *create, "-b", str(password_file), user, password], check=True)
            password_file.chmod(0o600)
            lines += ["allow_anonymous false", f"password_file {password_file}"]
        else:
            lines.append("allow_anonymous true")
        if acl is not None:
            acl_file = workdir / "mosquitto.acl"
            acl_file.write_text(acl, encoding="utf-8")
            acl_file.chmod(0o600)
            lines.append(f"acl_file {acl_file}")
        if tls:
            ca, cert, key = tls
            lines += [f"listener {self.tls_port} 127.0.0.1", f"cafile {ca}", f"certfile {cert}"]
            lines.append(f"keyfile {key}")
        self.config_path.write_text("\n".join(lines) + f"\n{extra_config}", encoding="utf-8")

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def command(self) -> list[str]:
        return [self.binary, "-c", str(self.config_path)]

    def ready(self) -> bool:
        for port in (self.port, self.tls_port):
            if port is None:
                continue
            try:
                socket.create_connection((self.host, port), timeout=1).close()
            except OSError:
                return False
        return True


@pytest.fixture
def victoria_metrics(tmp_path: Path):
    """A fresh VictoriaMetrics for one test; stopped by PID afterwards."""
    server = VictoriaMetrics(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mosquitto_broker(tmp_path: Path):
    """A fresh Mosquitto broker for one test; stopped by PID afterwards."""
    broker = Mosquitto(tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
