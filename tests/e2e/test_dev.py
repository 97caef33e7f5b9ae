"""`consent-ledger dev --demo`, run as a new user runs `make run`.

What the user sees: the command starts an embedded broker (Tansu) and an embedded
PostgreSQL, a worker and the API, prints the API, broker and database addresses,
and a demo producer fills the ledger; within seconds /v1/violations lists open
violations and /v1/stats counts accepted events. Ctrl-C stops every process it
started, exits with status 0 and keeps the data folder (database and keys), so a
second run still knows the first run's events.

No LEDGER_* variable reaches the command (a new user has none), so it starts the
embedded broker and database and creates its keys in the data folder.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from consent_ledger.devtools.processes import find_free_port
from tests.e2e.conftest import CLI

README = Path(__file__).resolve().parents[2] / "README.md"

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STARTUP_S = 120.0  # from the start of `dev` to everything the test waits for
STOP_S = 60.0  # from Ctrl-C to exit (dev itself gives its children 15 s)


def process_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time) of a process from /proc/PID/stat; None once gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (command) "
    return fields[0], int(fields[1]), int(fields[19])


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return "?"


def process_tree(*roots: int) -> dict[int, int]:
    """Every live process descending from ``roots`` by parent pid, roots included.

    Maps pid to start time, so that a pid reused later is not taken for the same process.
    """
    table: dict[int, tuple[str, int, int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := process_stat(int(entry.name))) is not None:
            table[int(entry.name)] = stat
    children: dict[int, list[int]] = defaultdict(list)
    for pid, (_, parent, _) in table.items():
        children[parent].append(pid)
    found: dict[int, int] = {}
    pending = [root for root in roots if root in table]
    while pending:
        pid = pending.pop()
        if pid not in found:
            found[pid] = table[pid][2]
            pending += children[pid]
    return found


def still_running(processes: dict[int, int]) -> dict[int, str]:
    """Those of ``processes`` (pid -> start time) still alive (zombies count as gone)."""
    alive: dict[int, str] = {}
    for pid, started in processes.items():
        stat = process_stat(pid)
        if stat is not None and stat[2] == started and stat[0] != "Z":
            alive[pid] = command_line(pid)
    return alive


def accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class DevRun:
    """One `consent-ledger dev` process, as a user starts it from a terminal."""

    def __init__(self, data_dir: Path, *options: str) -> None:
        self.data_dir = data_dir
        self.port = find_free_port()
        self.api_url = f"http://127.0.0.1:{self.port}"
        self.output_path = data_dir.parent / f"dev-{self.port}.out"
        env = {name: value for name, value in os.environ.items() if not name.startswith("LEDGER_")}
        env["LEDGER_API_PORT"] = str(self.port)
        with self.output_path.open("wb") as output:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [str(CLI), "dev", *options, "--data-dir", str(data_dir)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.deadline = time.monotonic() + STARTUP_S
        self.client = httpx.Client(base_url=self.api_url, timeout=5)
        self.started: dict[int, int] = {}  # pid -> start time of everything it started

    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def report(self) -> str:
        """The dev output and the tail of every log under <data-dir>/logs."""
        logs = "".join(
            f"\n--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted((self.data_dir / "logs").glob("*.log"))
        )
        return f"--- dev output\n{self.output()[-5000:]}{logs}"

    def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        """Poll ``condition`` until it holds; fail if dev exits or the start-up bound passes."""
        while not condition():
            if self.process.poll() is not None:
                pytest.fail(
                    f"dev exited with {self.process.returncode} before {what}:\n{self.report()}"
                )
            if time.monotonic() > self.deadline:
                pytest.fail(f"timed out waiting for {what}:\n{self.report()}")
            time.sleep(0.2)

    def get(self, path: str, **params: Any) -> httpx.Response | None:
        try:
            return self.client.get(path, params=params)
        except httpx.TransportError:
            return None

    def json(self, path: str, **params: Any) -> Any:
        response = self.get(path, **params)
        assert response is not None and response.status_code == 200, (path, response)
        return response.json()

    def wait_running(self) -> None:
        """The banner with the three addresses and the token is printed and /readyz
        answers 200; from then on the client signs in with the admin token."""
        banner = [
            rf"API:\s+{re.escape(self.api_url)}\s",
            r"broker:\s+127\.0\.0\.1:\d+\s",
            rf"database:\s+postgresql://\S+{re.escape(str(self.data_dir))}",
            r"^\s*export LEDGER_\S.* LEDGER_TOKEN=",
        ]
        self.wait_for(
            lambda: all(re.search(line, self.output(), re.MULTILINE) for line in banner),
            "the API, broker, database and export lines",
        )
        admin_token = self.data_dir / "admin.token"
        assert admin_token.stat().st_mode & 0o777 == 0o600
        self.client.headers["Authorization"] = f"Bearer {admin_token.read_text().strip()}"

        def ready() -> bool:
            response = self.get("/readyz")
            return response is not None and response.status_code == 200

        self.wait_for(ready, "GET /readyz to answer 200")

    def descendants(self) -> dict[int, int]:
        """The processes dev started and that still run: pid -> start time.

        pg_ctl daemonises the postmaster (its parent becomes pid 1), so the
        postmaster and its backends are found through postmaster.pid.
        """
        roots = [self.process.pid]
        with contextlib.suppress(OSError, ValueError, IndexError):
            postmaster = int((self.data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
            if str(self.data_dir / "postgres") in command_line(postmaster):  # not a stale file
                roots.append(postmaster)
        tree = process_tree(*roots)
        tree.pop(self.process.pid, None)
        return tree

    def collect_started(self) -> None:
        """Remember every process dev started, and check the expected ones are there."""
        self.started = self.descendants()
        commands = " | ".join(command_line(pid) for pid in self.started)
        for part in ("consent_ledger.cli worker", "consent_ledger.cli api", "tansu", "postgres"):
            assert part in commands, f"no {part!r} among dev's processes: {commands}"

    def interrupt(self, signum: signal.Signals = signal.SIGINT) -> int:
        """Ctrl-C (or ``signum``) to the dev process itself; its exit status."""
        self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=STOP_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"dev still running {STOP_S:.0f} s after {signum.name}:\n{self.report()}")

    def close(self) -> None:
        """Whatever happened, leave nothing running: SIGTERM, then SIGKILL the stragglers."""
        self.client.close()
        if self.process.poll() is None:
            self.started |= self.descendants()
            self.process.terminate()  # dev stops what it started, as on Ctrl-C
            try:
                self.process.wait(timeout=STOP_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        for pid in still_running(self.started):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def the_banner_and_the_readme_run_as_printed(run: DevRun) -> None:
    """In another shell: the banner's export line, then its verify command, and the
    README's Python producer example, each exactly as printed."""

    def signed() -> bool:
        response = run.get("/v1/ledger/checkpoints/latest")
        return response is not None and response.status_code == 200

    run.wait_for(signed, "a signed checkpoint")
    output = run.output()
    export = re.search(r"^\s*(export LEDGER_\S.*)$", output, re.MULTILINE)
    verify = re.search(r"verify:\s+(\S.*)$", output, re.MULTILINE)
    assert export and verify, output
    shell_env = {
        name: value for name, value in os.environ.items() if not name.startswith("LEDGER_")
    }

    def in_a_shell(script: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        # In another folder than dev's: the banner's paths must not depend on it.
        return subprocess.run(
            ["bash", "-c", f"{export.group(1)}\n{script}"], env=shell_env, input=stdin,
            cwd=run.data_dir, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    verified = in_a_shell(verify.group(1))
    assert verified.returncode == 0 and verified.stdout.startswith("OK"), verified
    example_curl = re.search(r"try:\s+(\S.*)$", output, re.MULTILINE)
    assert example_curl, output
    tried = in_a_shell(example_curl.group(1))  # with the token the export line reads
    assert tried.returncode == 0 and '"status": "open"' in tried.stdout, tried
    anonymous = in_a_shell("curl -s -o /dev/null -w '%{http_code}' " + run.api_url + "/v1/stats")
    assert anonymous.stdout == "401", anonymous
    example = re.search(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    assert example is not None
    produced = in_a_shell(f"{CLI.with_name('python')} -", stdin=example.group(1))
    assert produced.returncode == 0 and produced.stdout.startswith("published "), produced


def test_dev_demo_runs_everything_and_ctrl_c_stops_everything(
    postgres_data_parent: Path,
) -> None:
    data_dir = postgres_data_parent / "ledger-data"

    first = DevRun(data_dir, "--demo")
    try:
        first.wait_running()

        def demo_violation_open() -> bool:
            response = first.get("/v1/violations", status="open", limit=5)
            return (
                response is not None
                and response.status_code == 200
                and bool(response.json()["items"])
            )

        first.wait_for(demo_violation_open, "an open violation from the demo")
        first.wait_for(lambda: first.json("/v1/stats")["accepted"] > 0, "accepted events")
        violation = first.json("/v1/violations", status="open", limit=1)["items"][0]
        assert violation["status"] == "open"
        assert violation["subject"].startswith("subj-")  # the demo's subjects
        assert violation["rule"] and violation["explanation"]
        first.collect_started()
        accepted = first.json("/v1/stats")["accepted"]
        the_banner_and_the_readme_run_as_printed(first)

        assert first.interrupt() == 0, first.report()
        assert "stopping..." in first.output()
        # The worker shut down cleanly, not killed when dev's patience ran out.
        assert "worker stopped" in (data_dir / "logs" / "worker-1.log").read_text()
        left = still_running(first.started)
        assert not left, f"still running after dev exited: {left}\n{first.report()}"
        assert not accepts_connections(first.port)
    finally:
        first.close()

    assert (data_dir / "postgres" / "PG_VERSION").is_file()
    assert (data_dir / "master.key").is_file()
    assert (data_dir / "signing-key.pem").is_file()
    assert (data_dir / "public-key.pem").read_text().startswith("-----BEGIN PUBLIC KEY-----")

    second = DevRun(data_dir)  # no demo: only what the first run stored
    try:
        second.wait_running()
        assert second.json("/v1/stats")["accepted"] >= accepted
        assert second.json("/v1/violations", status="open", limit=1)["items"]
        second.collect_started()

        # A closed terminal (SIGHUP) stops everything too.
        assert second.interrupt(signal.SIGHUP) == 0, second.report()
        left = still_running(second.started)
        assert not left, f"still running after dev exited: {left}\n{second.report()}"
        assert not accepts_connections(second.port)
    finally:
        second.close()


def test_dev_refuses_a_port_already_in_use_before_starting_anything(
    postgres_data_parent: Path,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {name: value for name, value in os.environ.items() if not name.startswith("LEDGER_")}
        result = subprocess.run(
            [str(CLI), "dev", "--data-dir", str(postgres_data_parent / "ledger-data")],
            env=env | {"LEDGER_API_PORT": str(port)},
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert result.returncode == 1
    assert f"something already listens on http://127.0.0.1:{port}" in result.stdout
    assert "LEDGER_API_PORT" in result.stdout
    assert "starting the embedded" not in result.stdout  # nothing was started


def test_dev_restarts_a_worker_or_an_api_that_dies_and_ingestion_goes_on(
    postgres_data_parent: Path,
) -> None:
    data_dir = postgres_data_parent / "ledger-data"
    run = DevRun(data_dir, "--demo")
    try:
        run.wait_running()
        run.wait_for(lambda: run.json("/v1/stats")["accepted"] > 0, "accepted events")
        run.collect_started()

        def child(kind: str) -> int:
            [pid] = [
                p for p in run.descendants() if f"consent_ledger.cli {kind}" in command_line(p)
            ]
            return pid

        worker = child("worker")
        os.kill(worker, signal.SIGKILL)
        run.wait_for(lambda: "dev: worker-1 restarted" in run.output(), "dev to restart the worker")
        assert "worker-1 exited with status -9" in run.output()
        assert "restarts: worker-1 1, api 0" in run.output()
        restarted = child("worker")
        assert restarted != worker
        after_restart = run.json("/v1/stats")["accepted"]
        run.wait_for(
            lambda: run.json("/v1/stats")["accepted"] > after_restart,
            "the restarted worker to accept the demo's next events",
        )

        api = child("api")
        os.kill(api, signal.SIGKILL)
        run.wait_for(lambda: "dev: api restarted" in run.output(), "dev to restart the API")
        assert "restarts: worker-1 1, api 1" in run.output()

        def ready() -> bool:
            response = run.get("/readyz")
            return response is not None and response.status_code == 200

        run.wait_for(ready, "the restarted API to be ready")
        accepted = run.json("/v1/stats")["accepted"]
        run.wait_for(lambda: run.json("/v1/stats")["accepted"] > accepted, "ingestion to go on")
        assert child("api") != api
        run.started |= run.descendants()

        # Logs may name subjects: the owner's alone.
        logs = sorted((data_dir / "logs").glob("*.log"))
        assert {path.name for path in logs} >= {"api.log", "broker.log", "worker-1.log"}
        assert {path.name: path.stat().st_mode & 0o777 for path in logs} == {
            path.name: 0o600 for path in logs
        }
        assert (data_dir / "logs").stat().st_mode & 0o777 == 0o700

        assert run.interrupt() == 0, run.report()
        left = still_running(run.started)
        assert not left, f"still running after dev exited: {left}\n{run.report()}"
    finally:
        run.close()


def test_dev_stops_everything_when_the_broker_dies(postgres_data_parent: Path) -> None:
    run = DevRun(postgres_data_parent / "ledger-data")
    try:
        run.wait_running()
        run.collect_started()
        [broker] = [pid for pid in run.started if "tansu" in command_line(pid)]
        os.kill(broker, signal.SIGKILL)
        try:
            status = run.process.wait(timeout=STOP_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"dev still running {STOP_S:.0f} s after its broker died:\n{run.report()}")
        assert status == 1
        assert "the embedded broker stopped unexpectedly; stopping..." in run.output()
        left = still_running(run.started)
        assert not left, f"still running after dev exited: {left}\n{run.report()}"
    finally:
        run.close()
