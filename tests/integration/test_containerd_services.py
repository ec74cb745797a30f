"""The containerd from `make services` runs the example agent image under runc and under gVisor.

Foundation checks for the containerd runtime backend: they drive the real containerd with
`ctr` (settings from `.services/env`) and assert on what the containers print. A runc
container shares the host's kernel; a gVisor container prints gVisor's own kernel messages.
"""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import service_setting

pytestmark = pytest.mark.containerd

CTR_TIMEOUT_S = 60
READY_TIMEOUT_S = 30
GVISOR_BANNER = "Starting gVisor..."


@dataclass(frozen=True)
class Containerd:
    address: str
    namespace: str
    snapshotter: str
    image: str
    runc_runtime: str
    runsc_runtime: str
    runsc_binary: str

    def ctr(self, *args: str, timeout: float = CTR_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ctr", "--address", self.address, "--namespace", self.namespace, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def runtime_args(self, runtime: str) -> list[str]:
        """`ctr run` flags selecting runc, gVisor by runtime name, or gVisor by runc binary."""
        if runtime == "runc":
            return ["--runtime", self.runc_runtime]
        if runtime == "gvisor":
            return ["--runtime", self.runsc_runtime]
        if runtime == "gvisor-binary":
            return ["--runtime", self.runc_runtime, "--runc-binary", self.runsc_binary]
        raise ValueError(runtime)

    def remove(self, container_id: str) -> None:
        """Delete the task and the container, whatever state a failed test left them in."""
        if container_id in self.ctr("tasks", "ls", "-q").stdout.split():
            self.ctr("tasks", "kill", "-s", "SIGKILL", container_id)
            if self.ctr("tasks", "delete", "-f", container_id).returncode != 0:
                # runsc 20221219 cannot kill a task that a failed start left "created".
                runsc_root = f"/run/containerd/runc/{self.namespace}"  # the runc shim's default
                subprocess.run(
                    [self.runsc_binary, "--root", runsc_root, "delete", "--force", container_id],
                    capture_output=True,
                    timeout=CTR_TIMEOUT_S,
                    check=False,
                )
                self.ctr("tasks", "delete", "-f", container_id)
        if container_id in self.ctr("containers", "ls", "-q").stdout.split():
            self.ctr("containers", "delete", container_id)
        leftover = self.ctr("containers", "ls", "-q").stdout.split()
        assert container_id not in leftover, f"container {container_id} was not removed"


@pytest.fixture(scope="module")
def containerd() -> Containerd:
    c = Containerd(
        address=service_setting("CONTAINERD_ADDRESS", "containerd"),
        namespace=service_setting("CONTAINERD_NAMESPACE", "containerd"),
        snapshotter=service_setting("CONTAINERD_SNAPSHOTTER", "containerd"),
        image=service_setting("AGENTOS_EXAMPLE_IMAGE", "containerd example agent image"),
        runc_runtime=service_setting("AGENTOS_RUNC_RUNTIME", "containerd (runc)"),
        runsc_runtime=service_setting("AGENTOS_RUNSC_RUNTIME", "containerd (gVisor)"),
        runsc_binary=service_setting("AGENTOS_RUNSC_BINARY", "containerd (gVisor)"),
    )
    version = c.ctr("version", timeout=10)
    if version.returncode != 0:
        pytest.fail(
            f"containerd at {c.address} does not answer ({version.stderr.strip()}): "
            "run `make services` first",
            pytrace=False,
        )
    return c


@pytest.fixture
def container_id(request: pytest.FixtureRequest, containerd: Containerd) -> Iterator[str]:
    """A container id unique to this test run, removed afterwards even if the test failed."""
    name = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-")[:40]
    cid = f"{name}-{uuid.uuid4().hex[:8]}"
    yield cid
    containerd.remove(cid)


def run_once(containerd: Containerd, runtime: str, cid: str, script: str) -> str:
    """Run `sh -c script` in a fresh container of the example image; return its stdout."""
    result = containerd.ctr(
        "run",
        "--rm",
        "--snapshotter",
        containerd.snapshotter,
        *containerd.runtime_args(runtime),
        containerd.image,
        cid,
        "/bin/sh",
        "-c",
        script,
    )
    assert result.returncode == 0, (
        f"ctr run ({runtime}) failed with {result.returncode}: {result.stderr}{result.stdout}"
    )
    return result.stdout


def probe_script(name: str) -> str:
    """Greeting, uid, kernel log (or dmesg's error), a marker line, then /proc/version."""
    return f"echo hello-from-{name}; id -u; dmesg 2>&1; echo ---; cat /proc/version"


def test_runc_container_runs_on_the_host_kernel(containerd: Containerd, container_id: str) -> None:
    out = run_once(containerd, "runc", container_id, probe_script("runc"))

    lines = out.splitlines()
    assert lines[0] == "hello-from-runc"
    assert lines[1] == "65532", "the image runs as its non-root user"
    kernel_log, _, proc_version = out.partition("---\n")
    assert GVISOR_BANNER not in kernel_log
    assert proc_version.strip() == Path("/proc/version").read_text().strip()


@pytest.mark.parametrize("runtime", ["gvisor", "gvisor-binary"])
def test_gvisor_container_runs_on_the_gvisor_kernel(
    containerd: Containerd, container_id: str, runtime: str
) -> None:
    out = run_once(containerd, runtime, container_id, probe_script("gvisor"))

    lines = out.splitlines()
    assert lines[0] == "hello-from-gvisor"
    assert lines[1] == "65532"
    kernel_log, _, proc_version = out.partition("---\n")
    # gVisor's Sentry answers syslog(2) itself: its dmesg starts with its own banner, which
    # the host kernel never prints (and a runc container may not even read the host's log).
    assert re.search(r"^\[\s*0\.0+\] Starting gVisor\.\.\.$", kernel_log, re.MULTILINE), out
    # ... and /proc/version is gVisor's fake kernel, not the host's.
    assert proc_version.startswith("Linux version ")
    assert proc_version.strip() != Path("/proc/version").read_text().strip()


@pytest.mark.parametrize("runtime", ["runc", "gvisor"])
def test_example_agent_answers_healthz(
    containerd: Containerd, container_id: str, runtime: str
) -> None:
    port = "18081"
    started = containerd.ctr(
        "run",
        "--detach",
        "--snapshotter",
        containerd.snapshotter,
        "--env",
        f"AGENT_PORT={port}",
        *containerd.runtime_args(runtime),
        containerd.image,
        container_id,
    )
    assert started.returncode == 0, started.stderr

    # Probe from inside the container (its network namespace is its own) until the
    # entrypoint's httpd answers or the deadline passes; each probe is a real `ctr exec`.
    deadline = time.monotonic() + READY_TIMEOUT_S
    attempt = 0
    while True:
        attempt += 1
        probe = containerd.ctr(
            "tasks",
            "exec",
            "--exec-id",
            f"probe-{attempt}",
            container_id,
            "wget",
            "-S",
            "-q",
            "-O-",
            f"http://127.0.0.1:{port}/healthz",
        )
        if probe.returncode == 0 or time.monotonic() > deadline:
            break
    assert probe.returncode == 0, f"/healthz never answered: {probe.stderr}"
    assert "HTTP/1.1 200 OK" in probe.stderr  # wget -S prints the response headers to stderr
    assert probe.stdout == "ok\n"

    whoami = containerd.ctr("tasks", "exec", "--exec-id", "whoami", container_id, "id", "-u")
    assert whoami.stdout.strip() == "65532"
    tasks = containerd.ctr("tasks", "ls").stdout
    assert re.search(rf"^{re.escape(container_id)}\s+\d+\s+RUNNING$", tasks, re.MULTILINE), tasks
