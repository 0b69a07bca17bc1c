"""Run every benchmark in ``bench/`` and leave their results in ``bench/results/``.

Usage: ``make bench`` (or ``.venv/bin/python bench/run_all.py [--quick]``). Each benchmark compares
with a peer or a baseline in the same run and records the machine it ran on.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = ["bench_encoders.py", "bench_tokenize.py", "bench_envs.py", "bench_routers.py", "bench_ceiling.py", "bench_cache.py",
           "bench_serve.py", "bench_http_protocol.py", "bench_notebooks.py"]
QUICK = {"bench_routers.py", "bench_serve.py", "bench_tokenize.py"}  # the benchmarks that have a --quick mode


def main() -> int:
    quick = "--quick" in sys.argv[1:]
    failed = []
    for name in BENCHES:
        cmd = [sys.executable, str(HERE / name)]
        if quick and name in QUICK:
            cmd.append("--quick")
        print(f"== {name}", flush=True)
        if subprocess.run(cmd, cwd=HERE.parent, check=False).returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
