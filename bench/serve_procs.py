"""Processes of the serving benchmark: start pinned, wait until ready, read their CPU time, profile, stop.

:class:`Service` runs one command under ``taskset -c CPUS`` (so the process and every thread or child it
starts stay on those cores), waits for a health URL (or a line on its output), and reads the CPU seconds of
its whole process tree from ``/proc`` (``utime + stime`` of the process and its descendants).
"""

from __future__ import annotations

import collections
import math
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = collections.defaultdict(list)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        kids[int(fields[1])].append(int(entry))
    return kids


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and all its descendants (threads included)."""
    kids = _children()
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        todo.extend(kids.get(p, []))
    return total / CLK_TCK


class Service:
    """A benchmark target (or the provider) run as a pinned subprocess; a context manager.

    Args:
        name: label used in messages.
        cmd: the command (without ``taskset``).
        cpus: cores for ``taskset -c`` (``"0"`` or ``"1,2"``).
        health_url: polled until it answers 200 (None: wait for ``ready_line`` on the output instead).
        env: the environment of the process.
        log: file that receives its stdout and stderr.
    """

    def __init__(self, name: str, cmd: list[str], cpus: str, health_url: str | None, env: dict, log: Path,
                 *, cwd: Path, start_timeout: float = 120.0, ready_line: str | None = None) -> None:
        self.name, self.cmd, self.cpus, self.health_url = name, cmd, cpus, health_url
        self.env, self.log, self.cwd = env, log, cwd
        self.start_timeout, self.ready_line = start_timeout, ready_line
        self.proc: subprocess.Popen | None = None
        self.start_s = float("nan")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        taskset = shutil.which("taskset")
        cmd = ([taskset, "-c", self.cpus] if taskset else []) + self.cmd
        t0 = time.perf_counter()
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd,
                                         start_new_session=True)
        deadline = t0 + self.start_timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} while starting: "
                                   f"{self._tail()}")
            if self._ready():
                self.start_s = time.perf_counter() - t0
                print(f"  {self.name} ready in {self.start_s:.1f} s (pid {self.proc.pid}, cores {self.cpus})",
                      flush=True)
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {self.start_timeout:.0f} s: {self._tail()}")

    def _ready(self) -> bool:
        if self.health_url is None:
            return self.ready_line is not None and self.ready_line in self.log.read_text(errors="replace")
        try:
            with urllib.request.urlopen(self.health_url, timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _tail(self, n: int = 600) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no output)"
        return " | ".join(text[-n:].splitlines()[-8:]) or "(no output)"

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.pid)

    def wait_idle(self, max_s: float = 15.0, busy_fraction: float = 0.05) -> None:
        """Wait until the process tree uses < ``busy_fraction`` of a core (a backlog from an overloaded
        step must not leak into the next one)."""
        deadline = time.perf_counter() + max_s
        last = self.cpu_seconds()
        while time.perf_counter() < deadline:
            time.sleep(0.3)
            now = self.cpu_seconds()
            if now - last < 0.3 * busy_fraction:
                return
            last = now

    def profile(self, load: Callable[[], Any], seconds: float, out_dir: Path) -> dict | None:
        """Sample the process with ``py-spy`` (pinned to the load cores) while ``load()`` runs."""
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(spy).exists():
            return {"error": "py-spy is not installed (pip install py-spy: it is in the bench extra)"}
        raw = out_dir / "pyspy.txt"
        cmd = [spy, "record", "--pid", str(self.pid), "--duration", str(max(1, math.ceil(seconds))), "--rate", "200",
               "--format", "raw", "--output", str(raw), "--nonblocking"]
        cpus = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
        taskset = shutil.which("taskset")
        spy_proc = subprocess.Popen(([taskset, "-c", cpus] if taskset else []) + cmd, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
        time.sleep(0.5)  # let py-spy attach before the load starts
        result: dict[str, Any] = {}
        worker = threading.Thread(target=lambda: result.setdefault("load", load()))
        worker.start()
        out, _ = spy_proc.communicate(timeout=seconds + 60)
        worker.join()
        if spy_proc.returncode != 0 or not raw.is_file():
            return {"error": f"py-spy failed ({spy_proc.returncode}): {out[-400:]}"}
        summary = profile_summary(raw.read_text())
        summary["load"] = result["load"].as_dict() if "load" in result else None
        summary["command"] = " ".join(cmd)
        return summary

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: the process and any children
        except ProcessLookupError:
            return
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def __enter__(self) -> Service:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def profile_summary(raw: str, top: int = 20) -> dict:
    """Top functions of py-spy's raw (collapsed stack) output: own samples and inclusive samples."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]  # merge lines of one function
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    def pct(c: collections.Counter[str]) -> list[dict]:
        return [{"function": f, "percent": 100.0 * n / total} for f, n in c.most_common(top)] if total else []

    # the frames under every sample (runpy, the event loop's run) say nothing: leave them out of inclusive
    root = max(incl.values(), default=0)
    below_root = collections.Counter({f: n for f, n in incl.items() if n < 0.9 * root})
    return {"samples": total, "top_self": pct(own), "top_inclusive": pct(below_root)}


def machine_info() -> dict:
    from bench.machine import cpu_model

    cpu = cpu_model("unknown")
    nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip()
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    return {"cpu": cpu, "cores": os.cpu_count(), "nproc": nproc, "kernel": platform.release(),
            "os": platform.platform(), "python": platform.python_version(),
            "load_average_at_start": [round(x, 2) for x in load]}


def versions(root: Path) -> dict:
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in ["litellm", "uvicorn", "starlette", "uvloop", "httptools", "aiohttp", "httpx", "numpy", "faiss-cpu",
                 "model2vec", "py-spy"]:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            check=False).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, check=False).stdout.strip()
    out["git_commit"] = commit + ("+dirty" if dirty else "")
    return out
