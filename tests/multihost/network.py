"""Several "hosts" on one machine: a Linux bridge in the root network namespace and one network
namespace per host, joined to the bridge by a veth pair, each with its own address.

The shared services (PostgreSQL, Redis, the S3 server) listen on the bridge's address in the root
namespace; a host reaches them, and the other hosts, only over that network: inside a namespace,
``127.0.0.1`` is the host's own loopback, where nothing of the others listens. Each host's processes
also get their own empty working directory, so nothing passes between them through a shared disk
(the code itself is read from the checkout, as an installed package would be).

Needs root (``ip netns``); :func:`netns_available` says whether this machine allows it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def netns_available() -> str:
    """Empty when network namespaces can be made here, else why not."""
    if shutil.which("ip") is None:
        return "iproute2's ip is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    name = f"rfprobe{os.getpid() % 100000}"
    proc = _ip("netns", "add", name, check=False)
    if proc.returncode != 0:
        return f"ip netns add failed: {proc.stderr.strip()}"
    _ip("netns", "del", name, check=False)
    return ""


@dataclass
class Host:
    """One namespace with its address and its own working directory."""

    name: str
    netns: str
    ip: str
    workdir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def popen(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        log: Path,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside the namespace, in the host's directory, in its own session."""
        out = log.open("ab")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, *argv],
            cwd=self.workdir,
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        self.procs.append(proc)
        return proc

    def run(
        self, argv: Sequence[str], *, env: Mapping[str, str], timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` to its end inside the namespace; raises with its output when it fails."""
        proc = subprocess.run(
            ["ip", "netns", "exec", self.netns, *argv],
            cwd=self.workdir,
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"{self.name}: {' '.join(argv)} exited {proc.returncode}:\n"
                f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
            )
        return proc

    def wipe(self) -> None:
        """Delete everything in the host's working directory (a fresh disk)."""
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True)

    def stop(self) -> None:
        for proc in self.procs:
            kill_group(proc)
        self.procs.clear()


def kill_group(proc: subprocess.Popen[bytes], *, sig: int = signal.SIGKILL) -> None:
    """Signal the process's whole group (it leads one: ``start_new_session``) and reap it."""
    if proc.poll() is None:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)


class Network:
    """A bridge ``10.<a>.<b>.1/24`` and the hosts on it; :meth:`close` removes them all.

    Names carry this process's id so two runs on one machine never collide (interface names are
    limited to 15 characters)."""

    def __init__(self, root: Path | None = None) -> None:
        tag = os.getpid() % 60000
        self.tag = tag
        self.subnet = f"10.{200 + tag // 250 % 50}.{tag % 250}"
        self.gateway = f"{self.subnet}.1"
        self.bridge = f"rfbr{tag}"
        self.root = root or Path(tempfile.mkdtemp(prefix="refrain-hosts-"))
        self.hosts: dict[str, Host] = {}
        self._veths: list[str] = []
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def add_host(self, name: str) -> Host:
        n = len(self.hosts) + 2
        netns = f"rf{self.tag}-{name}"
        outside, inside = f"rfv{self.tag}x{n}", f"rfv{self.tag}y{n}"
        ip = f"{self.subnet}.{n}"
        _ip("netns", "add", netns)
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        self._veths.append(outside)
        _ip("link", "set", inside, "netns", netns)
        _ip("link", "set", outside, "master", self.bridge)
        _ip("link", "set", outside, "up")
        _ip("-n", netns, "addr", "add", f"{ip}/24", "dev", inside)
        _ip("-n", netns, "link", "set", inside, "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        workdir = self.root / name
        workdir.mkdir(parents=True, exist_ok=True)
        host = Host(name=name, netns=netns, ip=ip, workdir=workdir)
        self.hosts[name] = host
        return host

    def close(self) -> None:
        for host in self.hosts.values():
            host.stop()
            # Anything left running in the namespace (a grandchild that left its group).
            pids = _ip("netns", "pids", host.netns, check=False).stdout.split()
            for pid in pids:
                with suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            time.sleep(0.1)
            _ip("netns", "del", host.netns, check=False)
        for veth in self._veths:
            _ip("link", "del", veth, check=False)
        _ip("link", "del", self.bridge, check=False)
        shutil.rmtree(self.root, ignore_errors=True)
