"""Serving benchmark: open-loop load on loopback against our service and LiteLLM, same provider, same run.

Run: ``python bench/bench_serve.py`` (full, under ~10 minutes on an idle machine) or ``--quick`` (a ~1-minute
smoke run, without the LiteLLM proxy unless ``--targets`` names it). Writes ``bench/results/serve.json`` and
``bench/results/serve.md`` (``--quick``: ``out/bench-serve/quick.*``).

Every target sits in front of the same local provider (``python -m serve.provider --data demo
--latency-ms 50``) and gets the same requests from the open-loop generator in :mod:`bench.loadgen`:

======================= ==================================================================================
``null``                a do-nothing HTTP server: the generator's own ceiling and the latency floor of a hit
``provider``            the provider alone: the baseline that added latency is measured against
``ours-miss``           ``python -m serve`` (router trained on the demo data, static encoder, cache on),
                        every prompt new (a cache miss, routed and sent to the provider)
``ours-hit``            the same service answering prompts it has already cached
``litellm-router``      LiteLLM's ``Router`` in a minimal ASGI app (``bench/litellm_router_app.py``)
``litellm-proxy``       LiteLLM's proxy (``litellm --config``), same model list
======================= ==================================================================================

The target under test runs alone on one core (``taskset -c 0``); the generator (this process) and the
provider share the other (``taskset -c 1``). Per rate step: achieved rate, errors, latency P50/P95/P99 from
the scheduled send time, added latency (the target's percentile minus the provider's at the same rate; for
hits, minus the null server's) and CPU seconds per 1,000 requests of the target's process tree (from
``/proc/PID/stat``). A rate is *sustained* when achieved >= 95% of offered, errors < 0.1% and added P95 <
10 ms; each target steps up its rates and stops at the first rate it does not sustain. When our service
misses a target of issue 11, ``py-spy`` samples it under that load and the top entries go in the report.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import random
import shlex
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(ROOT))

from bench.loadgen import LoadSpec, run_load  # noqa: E402
from bench.serve_procs import Service, free_port, machine_info  # noqa: E402
from bench.serve_report import GOAL_HIT_RATE, GOAL_MISS_CPU_MS, GOAL_MISS_RATE, write_report  # noqa: E402

MISS_RATES = [25, 50, 100, 150, 250, 350, 500, 700, 1000, 1500, 2000]
HIT_RATES = [500, 1000, 2000, 3000, 4000, 5000, 6000, 8000]
NULL_RATES = [10000]  # plus every hit rate: the floor under each
QUICK = {"miss": [100, 500], "hit": [1000, 5000], "null": [5000]}
ALL_TARGETS = ["null", "provider", "ours-miss", "ours-hit", "litellm-router", "litellm-proxy"]
MISS_TARGETS = {"provider", "ours-miss", "litellm-router", "litellm-proxy"}
CRITERIA = {"min_achieved_fraction": 0.95, "max_error_rate": 0.001, "max_added_p95_ms": 10.0}
CHAT = "/v1/chat/completions"
PROXY_KEY = "sk-bench-" + "5e7f" * 8  # local master key for the LiteLLM proxy (loopback only)


def load_prompts(n: int, seed: int) -> tuple[list[str], str]:
    """``n`` distinct questions: Quora questions (GPTCache's QQP pairs, first of each pair) when the shared
    data is there, else the demo prompts paired two by two (distinct texts, far apart in meaning)."""
    root = Path(os.environ.get("ROUTING_DATA_DIR", ROOT.parent / "shared" / "data"))
    qqp = root / "gptcache_paraphrase" / "examples" / "benchmark" / "similiar_qqp_full.json.gz"
    rng = random.Random(seed)
    if qqp.is_file():
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(qqp.read_bytes()))) as tar:
            member = next(m for m in tar.getmembers() if m.isfile())
            f = tar.extractfile(member)
            assert f is not None
            pairs = json.load(f)
        seen: set[str] = set()
        texts = []
        for p in pairs:
            t = str(p["text_a"]).strip()
            if len(t) > 15 and t.lower() not in seen:
                seen.add(t.lower())
                texts.append(t)
        rng.shuffle(texts)
        if len(texts) >= n:
            return texts[:n], f"QQP questions (gptcache_paraphrase, {len(texts)} distinct)"
    import polars as pl

    demo = pl.read_parquet(ROOT / "datasets" / "demo" / "outcomes.parquet")["prompt"].unique().sort().to_list()
    rng.shuffle(demo)
    out = list(demo)
    k = 0
    while len(out) < n:
        a, b = demo[k % len(demo)], demo[(k * 7 + 1 + k // len(demo)) % len(demo)]
        if a != b:
            out.append(f"{a} Then: {b}")
        k += 1
    return out[:n], f"demo prompts ({len(demo)} distinct, paired for more)"


def chat_body(prompt: str, model: str, max_tokens: int) -> bytes:
    return json.dumps(
        {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens}
    ).encode()


class Bench:
    """One benchmark run: the steps, their rows and the final report."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.machine = machine_info()  # before this process pins itself (nproc follows the affinity)
        self.rows: list[dict] = []
        self.notes: list[str] = []
        self.profile: dict | None = None
        self.prompts: list[str] = []
        self.next_prompt = 0
        self.pool: list[str] = []
        self.provider: Service | None = None
        self.service_cmd: list[str] | None = None
        self.cached: list[bytes] = []

    # -- prompts -------------------------------------------------------------------------------
    def fresh_prompts(self, n: int) -> list[str]:
        """``n`` prompts no target has been sent before (every target's ladder uses its own block)."""
        if self.next_prompt + n > len(self.prompts):
            raise RuntimeError(f"ran out of distinct prompts ({len(self.prompts)}); lower the rates or durations")
        block = self.prompts[self.next_prompt : self.next_prompt + n]
        self.next_prompt += n
        return block

    def spec(self, url: str, rate: float, headers: tuple[tuple[str, str], ...] = ()) -> LoadSpec:
        a = self.args
        return LoadSpec(url=url, rate=rate, duration_s=a.duration, warmup_s=a.warmup, timeout_s=a.timeout,
                        max_connections=a.max_connections, headers=headers)

    # -- one step ----------------------------------------------------------------------------
    def step(self, target: str, svc: Service | None, url: str, rate: float, bodies: list[bytes],
             headers: tuple[tuple[str, str], ...] = ()) -> dict:
        spec = self.spec(url, rate, headers)
        if svc is not None:
            svc.wait_idle()
        cpu0 = svc.cpu_seconds() if svc is not None else 0.0
        prov0 = self.provider.cpu_seconds() if self.provider is not None else 0.0
        result = run_load(spec, bodies)
        cpu = (svc.cpu_seconds() - cpu0) if svc is not None else float("nan")
        prov = (self.provider.cpu_seconds() - prov0) if self.provider is not None else float("nan")
        row = {"target": target, "rate": rate, **result.as_dict(),
               "cpu_s_per_1000": cpu / result.sent * 1000 if svc is not None else None,
               # share of its core the target used over the step: well under 1 while not keeping up means
               # it waited on something else (or other processes took the core)
               "cpu_busy_fraction": cpu / result.wall_s if svc is not None else None,
               "provider_cpu_s_per_1000": prov / result.sent * 1000}
        self._judge(row)
        self.rows.append(row)
        counts, kind = row["header_counts"], {"ours-miss": "hit", "ours-hit": "miss"}.get(target)
        if kind and counts.get(kind):
            self.notes.append(f"{target} at {rate:g}/s: {counts[kind]} of {row['measured']} answers had "
                              f"x-cache: {kind}")
        lat = row["latency_ms"]
        added = row.get("added_ms") or {}
        print(f"  {target:15s} {rate:6.0f}/s achieved {row['achieved_rate']:7.1f} err {row['error_rate']:.2%} "
              f"p50 {lat['p50']:7.2f} p95 {lat['p95']:7.2f} p99 {lat['p99']:7.2f} ms "
              f"added p95 {added.get('p95', float('nan')):7.2f} cpu/1k {row['cpu_s_per_1000'] or 0:.3f} s "
              f"{row['header_counts'] or ''} {'ok' if row['sustained'] else 'NOT sustained'}", flush=True)
        return row

    def _reference(self, target: str, rate: float) -> dict | None:
        ref = "null" if target in ("ours-hit", "null") else "provider"
        if target == ref:
            return None
        for r in self.rows:
            if r["target"] == ref and r["rate"] == rate:
                return r
        return None

    def _judge(self, row: dict) -> None:
        ref = self._reference(row["target"], row["rate"])
        if ref is not None:
            row["added_vs"] = ref["target"]
            row["added_ms"] = {k: row["latency_ms"][k] - ref["latency_ms"][k] for k in ("p50", "p95", "p99")}
        else:
            row["added_vs"], row["added_ms"] = None, None
        # without a reference at this rate in the run (a partial --targets), latency is not judged
        p95_added = row["added_ms"]["p95"] if row["added_ms"] else 0.0
        row["sustained"] = bool(
            row["achieved_rate"] >= CRITERIA["min_achieved_fraction"] * row["rate"]
            and row["error_rate"] < CRITERIA["max_error_rate"]
            and p95_added < CRITERIA["max_added_p95_ms"]
        )

    def ladder(self, target: str, svc: Service | None, url: str, rates: list[int], make_bodies,
               headers: tuple[tuple[str, str], ...] = (), stop_on_fail: bool = True) -> None:
        # warm up first (lazy imports, client pools, first-call compilation) at a low rate
        warm = run_load(LoadSpec(url=url, rate=20, duration_s=1.0, warmup_s=0, timeout_s=30, headers=headers),
                        make_bodies(20))
        if warm.ok == 0:
            raise RuntimeError(f"{target} answered no warm-up request: {warm.errors} {warm.status_counts}")
        for rate in rates:
            row = self.step(target, svc, url, rate, make_bodies(rate), headers)
            if stop_on_fail and not self.args.no_stop and not row["sustained"]:
                break

    # -- the run -----------------------------------------------------------------------------
    def run(self) -> dict:
        a = self.args
        quick = a.quick
        self.miss_rates = QUICK["miss"] if quick else MISS_RATES
        self.hit_rates = QUICK["hit"] if quick else HIT_RATES
        self.null_rates = QUICK["null"] if quick else NULL_RATES
        if a.max_rate:
            self.miss_rates = [r for r in self.miss_rates if r <= a.max_rate]
            self.hit_rates = [r for r in self.hit_rates if r <= a.max_rate]
            self.null_rates = [r for r in self.null_rates if r <= a.max_rate]
        self.per_step = a.warmup + a.duration
        n_miss = len(MISS_TARGETS & set(a.targets))
        per_ladder = (sum(self.miss_rates) + 20) * self.per_step + len(self.miss_rates) + 2
        need = int(per_ladder * n_miss + GOAL_MISS_RATE * self.per_step + a.hit_prompts + 1000)
        self.prompts, source = load_prompts(need, a.seed)
        self.notes.append(f"prompts: {source}")
        os.sched_setaffinity(0, {int(c) for c in a.load_cpus.split(",")})
        self.env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                        TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
        self.logs = Path(tempfile.mkdtemp(prefix="bench-serve-"))
        prov_port = free_port()
        self.prov_url = f"http://127.0.0.1:{prov_port}"
        cmd = [sys.executable, "-m", "serve.provider", "--port", str(prov_port), "--data", "demo", "--latency-ms",
               f"{a.latency_ms:g}"]
        self.provider = Service("provider", cmd, a.load_cpus, self.prov_url + "/healthz", self.env,
                                self.logs / "provider.log", cwd=ROOT)
        self.provider.start()
        self.pool = [m["id"] for m in json.loads(_get(self.prov_url + "/v1/models"))["data"]]
        sections = {"null": self.run_null, "provider": self.run_provider, "ours": self.run_ours,
                    "litellm-router": self.run_litellm_router, "litellm-proxy": self.run_proxy}
        try:
            for name, section in sections.items():
                wanted = {"ours-miss", "ours-hit"} if name == "ours" else {name}
                if not wanted & set(a.targets):
                    continue
                try:
                    section()
                except RuntimeError as exc:  # a target that cannot start: say why, measure the others
                    self.notes.append(f"{name} not measured: {exc}")
                    print(f"  {name} not measured: {exc}", flush=True)
        finally:
            self.provider.stop()
        return self.report(self.logs)

    def miss_bodies(self, model: str):
        """Bodies for one step at ``rate``: prompts never sent before (every one a cache miss)."""
        n_for = lambda rate: int(rate * self.per_step) + 1  # noqa: E731
        return lambda rate: [chat_body(p, model, self.args.max_tokens) for p in self.fresh_prompts(n_for(rate))]

    def run_null(self) -> None:
        print("== null server (the generator's ceiling)", flush=True)
        port = free_port()
        cmd = [sys.executable, str(ROOT / "bench" / "loadgen.py"), "--serve-null", str(port)]
        with Service("null", cmd, self.args.service_cpu, None, self.env, self.logs / "null.log", cwd=ROOT,
                     ready_line="null server on") as svc:
            body = [chat_body("What is the capital of France?", "router", self.args.max_tokens)]
            rates = sorted(set(self.null_rates) | set(self.hit_rates))  # the floor under every hit rate
            self.ladder("null", svc, f"http://127.0.0.1:{port}{CHAT}", rates, lambda r: body, stop_on_fail=False)

    def run_provider(self) -> None:
        print("== provider alone (baseline)", flush=True)
        self.ladder("provider", self.provider, self.prov_url + CHAT, self.miss_rates, self.miss_bodies(self.pool[0]),
                    stop_on_fail=False)

    def run_ours(self) -> None:
        a = self.args
        model_dir = ensure_router(a, self.env)
        port = free_port()
        url = f"http://127.0.0.1:{port}{CHAT}"
        cmd = [sys.executable, "-m", "serve", "--model", str(model_dir), "--port", str(port), "--provider-url",
               self.prov_url, *shlex.split(a.serve_args)]
        print(f"== our service: python {' '.join(cmd[1:])}", flush=True)
        with Service("ours", cmd, a.service_cpu, f"http://127.0.0.1:{port}/readyz", self.env,
                     self.logs / "serve.log", cwd=ROOT, start_timeout=a.start_timeout) as svc:
            self.service_cmd = cmd
            if "ours-miss" in a.targets:
                self.ladder("ours-miss", svc, url, self.miss_rates, self.miss_bodies("router"))
            if "ours-hit" in a.targets:
                self.cached = [chat_body(p, "router", a.max_tokens) for p in self.fresh_prompts(a.hit_prompts)]
                prime = run_load(LoadSpec(url=url, rate=100, duration_s=len(self.cached) / 100, warmup_s=0,
                                          timeout_s=a.timeout), self.cached)
                self.notes.append(f"hits: {len(self.cached)} distinct prompts sent once first ({prime.ok} ok, "
                                  f"x-cache {prime.header_counts}), then cycled")
                self.ladder("ours-hit", svc, url, self.hit_rates, lambda rate: self.cached)
            if not a.no_profile:
                self.profile_if_missed(svc, url)

    def run_litellm_router(self) -> None:
        print("== LiteLLM Router in a minimal ASGI app", flush=True)
        port = free_port()
        cmd = [sys.executable, str(ROOT / "bench" / "litellm_router_app.py"), "--port", str(port), "--provider-url",
               self.prov_url, "--models", ",".join(self.pool)]
        with Service("litellm-router", cmd, self.args.service_cpu, f"http://127.0.0.1:{port}/healthz", self.env,
                     self.logs / "litellm_router.log", cwd=ROOT, start_timeout=self.args.start_timeout) as svc:
            self.ladder("litellm-router", svc, f"http://127.0.0.1:{port}{CHAT}", self.miss_rates,
                        self.miss_bodies("router"))

    def profile_if_missed(self, svc: Service, url: str) -> None:
        """When our service misses an issue-11 target, sample it with py-spy under that load."""
        ours = {t: [r for r in self.rows if r["target"] == t] for t in ("ours-miss", "ours-hit")}
        missed: list[tuple[str, int, list[bytes]]] = []
        at_goal = [r for r in ours["ours-miss"] if r["rate"] == GOAL_MISS_RATE]
        if ours["ours-miss"] and (not at_goal or not at_goal[0]["sustained"]
                                  or at_goal[0]["cpu_s_per_1000"] > GOAL_MISS_CPU_MS):
            missed.append(("ours-miss", GOAL_MISS_RATE, self.miss_bodies("router")(GOAL_MISS_RATE)))
        hit_goal = [r for r in ours["ours-hit"] if r["rate"] == GOAL_HIT_RATE]
        if ours["ours-hit"] and (not hit_goal or not hit_goal[0]["sustained"]):
            missed.append(("ours-hit", GOAL_HIT_RATE, self.cached))
        if not missed:
            return
        target, rate, bodies = missed[0]
        print(f"== profile of our service under {target} load at {rate}/s (py-spy)", flush=True)
        svc.wait_idle()
        spec = self.spec(url, rate)
        self.profile = svc.profile(lambda: run_load(spec, bodies), spec.warmup_s + spec.duration_s,
                                   Path(tempfile.mkdtemp(prefix="bench-serve-prof-")))
        if self.profile is not None:
            self.profile.update(target=target, rate=rate)

    def run_proxy(self) -> None:
        a = self.args
        import yaml

        from bench.litellm_router_app import model_list

        cfg = {"model_list": model_list(self.prov_url, self.pool),
               "litellm_settings": {"num_retries": 0, "set_verbose": False},
               "general_settings": {"disable_spend_logs": True}}
        cfg_path = self.logs / "litellm_proxy.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg))
        port = free_port()
        exe = Path(sys.executable).with_name("litellm")
        cmd = [str(exe), "--config", str(cfg_path), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
        env = dict(self.env, LITELLM_MASTER_KEY=PROXY_KEY, LITELLM_LOG="ERROR")
        print(f"== LiteLLM proxy: {' '.join(cmd[1:])}", flush=True)
        with Service("litellm-proxy", cmd, a.service_cpu, f"http://127.0.0.1:{port}/health/liveliness", env,
                     self.logs / "litellm_proxy.log", cwd=self.logs, start_timeout=max(a.start_timeout, 180)) as svc:
            self.ladder("litellm-proxy", svc, f"http://127.0.0.1:{port}{CHAT}", self.miss_rates,
                        self.miss_bodies("router"), headers=(("Authorization", f"Bearer {PROXY_KEY}"),))

    def report(self, logs: Path) -> dict:
        return write_report(self, logs)


def ensure_router(args: argparse.Namespace, env: dict) -> Path:
    """The router the service loads: ``--model``, or one trained once on the demo data (static encoder) and
    kept in ``out/bench-serve/router``."""
    if args.model:
        return Path(args.model)
    out = ROOT / "out" / "bench-serve" / "router"
    if not (out / "router.json").is_file():
        print(f"== training the served router on the demo data (static encoder) into {out}", flush=True)
        cmd = [sys.executable, "-m", "training", "fit", "--dataset", "demo", "--encoder", "static", "--out", str(out),
               "--no-track"]
        done = subprocess.run(cmd, cwd=ROOT, env=env, check=False, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"training the served router failed: {done.stderr[-500:]}")
    return out


def _get(url: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="open-loop serving benchmark (see the module docstring)")
    ap.add_argument("--quick", action="store_true", help="~1-minute smoke run: two rates per target, short steps")
    ap.add_argument("--targets", default=None,
                    help=f"comma-separated subset of {','.join(ALL_TARGETS)} or 'all' (default: all; "
                         "--quick leaves out litellm-proxy, which takes ~30 s to start)")
    ap.add_argument("--duration", type=float, default=None, help="measured seconds per step (default 5; quick 2)")
    ap.add_argument("--warmup", type=float, default=None, help="warm-up seconds per step (default 1; quick 0.5)")
    ap.add_argument("--timeout", type=float, default=5.0, help="per-request timeout in seconds")
    ap.add_argument("--max-rate", type=float, default=None, help="skip rates above this")
    ap.add_argument("--latency-ms", type=float, default=50.0, help="the provider's fixed latency")
    ap.add_argument("--max-tokens", type=int, default=64, help="max_tokens of every request (answer length)")
    ap.add_argument("--hit-prompts", type=int, default=256, help="distinct prompts cycled by the hit load")
    ap.add_argument("--max-connections", type=int, default=1024)
    ap.add_argument("--service-cpu", default="0", help="the core the target under test is pinned to")
    ap.add_argument("--load-cpus", default="1", help="the core(s) of the load generator and the provider")
    ap.add_argument("--model", default=None, help="router directory for the service (default: train one)")
    ap.add_argument("--serve-args", default="", help="extra flags for python -m serve (quoted)")
    ap.add_argument("--start-timeout", type=float, default=120.0)
    ap.add_argument("--no-profile", action="store_true", help="skip the py-spy profile when a target is missed")
    ap.add_argument("--no-stop", action="store_true",
                    help="run every rate of a ladder even after one is not sustained (the summary still counts the "
                         "highest rate with every lower one sustained)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None,
                    help="output path without suffix (default bench/results/serve; --quick: out/bench-serve/quick, "
                         "so a smoke run never overwrites the recorded results)")
    args = ap.parse_args(argv)
    if args.targets in (None, ""):
        args.targets = [t for t in ALL_TARGETS if not (args.quick and t == "litellm-proxy")]
    elif args.targets == "all":
        args.targets = list(ALL_TARGETS)
    else:
        args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
        unknown = sorted(set(args.targets) - set(ALL_TARGETS))
        if unknown:
            ap.error(f"unknown targets {unknown}; choose from {ALL_TARGETS}")
    if args.out is None:
        args.out = str(ROOT / "out" / "bench-serve" / "quick") if args.quick else str(ROOT / "bench" / "results" / "serve")
    if args.duration is None:
        args.duration = 2.0 if args.quick else 5.0
    if args.warmup is None:
        args.warmup = 0.5 if args.quick else 1.0
    cpus = os.sched_getaffinity(0)
    wanted = {int(c) for c in args.load_cpus.split(",")} | {int(args.service_cpu)}
    if not wanted <= cpus:
        ap.error(f"cores {sorted(wanted - cpus)} are not available here (have {sorted(cpus)}); "
                 "set --service-cpu and --load-cpus")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    bench = Bench(args)
    report = bench.run()
    print(f"wrote {args.out}.json and {args.out}.md in {time.perf_counter() - t0:.0f} s", flush=True)
    return 0 if report["rows"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
