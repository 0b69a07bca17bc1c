"""The service's parts without HTTP: settings (file + environment, errors from a table), the micro-batcher,
the decision step (same choices as ``Router.route``, fallback order by utility), and the CLI's errors."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
from serve_support import MATH, ROOT, tiny_router

from serve.decide import Decider, MicroBatcher, RouteOptions
from serve.registry import Policy, PolicyHolder, directory_version, parse_spec
from serve.settings import Settings, SettingsError

# ------------------------------------------------------------------ settings


def test_settings_sources_and_precedence(tmp_path):
    cfg = tmp_path / "serve.yaml"
    cfg.write_text("model: out/a\nport: 8100\ncache:\n  ttl_s: 10\nprofiles:\n  cheap: {lam: 500, allowed_models: [a, b]}\n")
    s = Settings.load(cfg, environ={"ROUTER_SERVE_PORT": "8200", "ROUTER_SERVE_CACHE__MAX_ENTRIES": "7"},
                      overrides={"model": "out/b", "host": None})
    assert (s.model, s.port, s.host) == ("out/b", 8200, "127.0.0.1")
    assert (s.cache.ttl_s, s.cache.max_entries, s.cache.enabled) == (10.0, 7, True)
    assert s.profiles["cheap"].lam == 500.0 and s.profiles["cheap"].allowed_models == ("a", "b")
    assert Settings.from_dict(json.loads(s.to_json())) == s  # what worker processes receive
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.port = 1  # type: ignore[misc]


SETTINGS_ERRORS = [
    ({"model": "m", "prot": 1}, {}, "prot: unknown setting 'prot' (did you mean 'port'?)"),
    ({"model": "m", "port": "80"}, {}, "port must be an integer"),
    ({"model": "m", "port": 70000}, {}, "port = 70000 is invalid: it must be a TCP port"),
    ({"model": "m"}, {"ROUTER_SERVE_WORKERS": "two"}, "ROUTER_SERVE_WORKERS must be an integer"),
    ({"model": "m"}, {"ROUTER_SERVE_CACHE__ENABLED": "maybe"}, "ROUTER_SERVE_CACHE__ENABLED must be true or false"),
    ({"model": "m"}, {"ROUTER_SERVE_CACHE__TTL": "1"}, "ROUTER_SERVE_CACHE__TTL: unknown setting 'ttl'"),
    ({"model": "m", "cache": {"threshold": 1.5}}, {}, "cache.threshold = 1.5 is invalid"),
    ({"model": "m", "profiles": {"x": {"lam": -1}}}, {}, "profiles.x.lam = -1.0 is invalid"),
    ({"model": "m", "profiles": {"x": {"allowed_models": []}}}, {}, "profiles.x.allowed_models is empty"),
    ({"model": "m", "profiles": {"x": {"lamb": 1}}}, {}, "profiles.x.lamb: unknown setting 'lamb'"),
    ({"model": "m", "encode_in_thread": "sometimes"}, {}, "must be one of auto, always, never"),
    ({"model": "m", "logbook": {"answer_after_commit": True}}, {}, "logbook.answer_after_commit needs logbook.dir"),
    ({}, {}, "model: no router given"),
]


@pytest.mark.parametrize("overrides,environ,message", SETTINGS_ERRORS)
def test_settings_errors_name_the_key(overrides, environ, message):
    with pytest.raises(SettingsError) as info:
        Settings.load(overrides=overrides, environ=environ)
    assert message in str(info.value)


def test_settings_file_errors(tmp_path):
    with pytest.raises(SettingsError, match="does not exist"):
        Settings.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SettingsError, match="cannot be parsed"):
        Settings.load(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(SettingsError, match="must hold a mapping"):
        Settings.load(lst)


# ------------------------------------------------------------------ micro-batching


def test_micro_batcher_runs_one_batch_per_loop_turn_and_isolates_failures():
    calls: list[list[int]] = []

    def fn(items: list[int]) -> list[int | BaseException]:
        calls.append(list(items))
        return [ValueError(f"bad {i}") if i < 0 else i * 10 for i in items]

    async def main() -> list[object]:
        b: MicroBatcher[int, int] = MicroBatcher(fn, max_batch=4)
        futs = [b.submit(i) for i in (1, 2, -3, 4, 5, 6)]
        return await asyncio.gather(*futs, return_exceptions=True)

    out = asyncio.run(main())
    assert calls == [[1, 2, -3, 4], [5, 6]]  # max_batch closes the first batch, the loop turn the second
    assert out[:2] == [10, 20] and out[3:] == [40, 50, 60]
    assert isinstance(out[2], ValueError) and str(out[2]) == "bad -3"


def test_micro_batcher_waits_only_when_more_items_are_expected_within_the_window():
    """Known answers of the window rule: fewer than one more item expected within the window -> no
    wait; more -> the window, or less when ``target`` items are expected sooner."""
    b: MicroBatcher[int, int] = MicroBatcher(lambda items: items, window_s=0.003, target=16)
    b.rate = 150.0  # 0.45 items expected in 3 ms
    assert b.wait_s() == 0.0
    b.rate = 1000.0  # 3 expected; 16 would take 16 ms: the whole window
    assert b.wait_s() == pytest.approx(0.003)
    b.rate = 10_000.0  # 16 expected after 1.6 ms
    assert b.wait_s() == pytest.approx(0.0016)
    b._items = list(range(12))  # 4 more needed: 0.4 ms
    assert b.wait_s() == pytest.approx(0.0004)
    b._items = list(range(20))
    assert b.wait_s() == 0.0
    assert MicroBatcher(lambda items: items, window_s=0.0).wait_s() == 0.0


def test_micro_batcher_rate_counts_recent_submits():
    async def main() -> float:
        b: MicroBatcher[int, int] = MicroBatcher(lambda items: items, window_s=0.004)
        futs = [b.submit(i) for i in range(50)]  # 50 items within microseconds: 50 / tau
        rate = b.rate
        await asyncio.gather(*futs)
        return rate

    from serve.decide import RATE_TAU_S

    assert asyncio.run(main()) == pytest.approx(50 / RATE_TAU_S, rel=0.01)


def test_micro_batcher_in_a_thread_batches_what_arrives_while_busy():
    import threading
    import time

    calls: list[list[int]] = []
    main_thread = threading.get_ident()

    def fn(items: list[int]) -> list[int]:
        assert threading.get_ident() != main_thread
        calls.append(list(items))
        time.sleep(0.05)
        return items

    async def main() -> list[int]:
        b: MicroBatcher[int, int] = MicroBatcher(fn, in_thread=True)
        first = b.submit(0)
        await asyncio.sleep(0.01)  # the first batch is running in the thread now
        rest = [b.submit(i) for i in (1, 2, 3)]
        out = await asyncio.gather(first, *rest)
        b.close()
        return list(out)

    assert asyncio.run(main()) == [0, 1, 2, 3]
    assert calls == [[0], [1, 2, 3]]


# ------------------------------------------------------------------ the decision step


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    path = tmp_path_factory.mktemp("r")
    router = tiny_router(path, lam=50.0)
    return Policy(router, directory_version(path), str(path), frozenset(router.models), 0.0)


def test_batched_decisions_equal_router_route(policy):
    from router.data.synthetic import generate

    prompts = [[{"role": "user", "content": str(p)}] for p in generate(40, seed=3).outcomes.prompts]
    options = [RouteOptions(), RouteOptions(lam=1e6), RouteOptions(allowed=("code-34b", "math-13b"))]
    decider = Decider(PolicyHolder(policy), fallbacks=4)

    async def main() -> list:
        futs = [decider.decide(p, options[i % 3]) for i, p in enumerate(prompts)]
        return list(await asyncio.gather(*futs))

    got = asyncio.run(main())
    router = policy.router
    for k, opts in enumerate(options):
        idx = list(range(k, len(prompts), 3))
        d = router.route([prompts[i] for i in idx], lam=opts.lam, allowed=opts.allowed)
        assert [got[i].chosen for i in idx] == d.chosen
        assert np.allclose([got[i].predicted_cost for i in idx], d.cost[np.arange(len(idx)), d.chosen_index])
        assert [got[i].propensity for i in idx] == list(d.propensity)
    assert all(g.version == policy.version for g in got)
    allowed = {"code-34b", "math-13b"}
    assert all(set(got[i].candidates) <= allowed for i in range(2, len(prompts), 3))


def test_lookup_batch_equals_embed_then_get_then_decide(policy):
    """One batch of cache lookups and decisions gives what the step-by-step path gives."""
    from router.data.synthetic import generate
    from serve.app import embed_for_cache
    from serve.cache import SemanticCache
    from serve.lookup import Lookup, LookupItem

    cache = SemanticCache(policy.router.encoder, threshold=0.95)
    prompts = [str(p) for p in generate(30, seed=5).outcomes.prompts]
    for text in prompts[:10]:
        req = {"model": "router", "messages": [{"role": "user", "content": text}]}
        cache.put(SemanticCache.scope("acme", req), text, {"text": "cached " + text})
    options = [RouteOptions(), RouteOptions(lam=1e6)]
    items = []
    for i, text in enumerate(prompts):
        req = {"model": "router", "messages": [{"role": "user", "content": text}]}
        tenant = "acme" if i % 2 else "globex"  # globex has nothing cached: every globex item misses
        items.append(LookupItem(SemanticCache.scope(tenant, req), text, req["messages"], options[i % 2], tenant,
                                route=i % 5 != 0))
    decider = Decider(PolicyHolder(policy), fallbacks=4)
    lookup = Lookup(cache, decider, embed_for_cache)

    async def main() -> list:
        return list(await asyncio.gather(*(lookup.submit(it) for it in items)))

    got = asyncio.run(main())
    assert any(r.hit is not None for r in got) and any(r.hit is None for r in got)
    missed = [it for it, r in zip(items, got) if r.hit is None and it.route]

    async def step_by_step() -> list:  # the same requests decided as one Decider batch
        return list(await asyncio.gather(*(decider.decide(it.messages, it.options, it.tenant) for it in missed)))

    refs = iter(asyncio.run(step_by_step()))
    for it, res in zip(items, got):
        raw, unit = embed_for_cache(cache, [it.text])[0]
        assert np.allclose(res.raw, raw, atol=1e-6) and np.allclose(res.embedding, unit, atol=1e-6)
        hit = cache.get(it.scope, it.text, embedding=unit)
        assert (res.hit is None) == (hit is None)
        if hit is not None:
            assert res.hit.value == hit.value and res.decision is None
        elif it.route:
            ref = next(refs)
            assert res.decision is not None and res.error is None
            assert (res.decision.chosen, res.decision.candidates, res.decision.propensity) == \
                (ref.chosen, ref.candidates, ref.propensity)
        else:
            assert res.decision is None  # not routed: the cache lookup only


def test_candidates_are_chosen_first_then_by_utility_within_limits(policy):
    decider = Decider(PolicyHolder(policy), fallbacks=10)
    prompt = [{"role": "user", "content": MATH}]
    d = decider.decide_now(prompt)
    ref = policy.router.route([prompt])
    order = [policy.router.models[j] for j in np.argsort(-ref.utility[0], kind="stable")]
    assert d.candidates[0] == d.chosen == ref.chosen[0]
    assert list(d.candidates[1:]) == [m for m in order if m != d.chosen]
    cap = float(np.median(ref.cost[0]))
    capped = decider.decide_now(prompt, RouteOptions(max_cost=cap))
    costs = dict(zip(policy.router.models, ref.cost[0]))
    assert all(costs[m] <= cap for m in capped.candidates)
    assert Decider(PolicyHolder(policy), fallbacks=1).decide_now(prompt).candidates == d.candidates[:2]


def test_model_specs():
    assert parse_spec("models:/r/3").version == "3"
    assert parse_spec("runs:/abc/router").kind == "runs"
    from router.errors import PersistenceError

    with pytest.raises(PersistenceError, match="use models:/NAME@ALIAS or models:/NAME/VERSION"):
        parse_spec("models:/r")


# ------------------------------------------------------------------ the command line


CLI_ERRORS = [
    (["--model", "/no/such/router"], "error: --model /no/such/router: no such directory"),
    (["--model", str(ROOT / "router")], "no router.json in that directory"),
    (["--model", "models:/just-a-name"], "use models:/NAME@ALIAS or models:/NAME/VERSION"),
    ([], "model: no router given"),
    (["--model", "x", "--port", "99999"], "port = 99999 is invalid"),
]


@pytest.mark.parametrize("args,message", CLI_ERRORS)
def test_cli_errors_are_one_clear_line(args, message):
    proc = subprocess.run([sys.executable, "-m", "serve", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr


def test_cli_reports_a_bad_config_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: x\nmax_body: 10\n")
    proc = subprocess.run([sys.executable, "-m", "serve", "--config", str(cfg)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert "max_body: unknown setting 'max_body' (did you mean 'max_body_bytes'?)" in proc.stderr


def test_the_readme_config_example_is_valid(tmp_path):
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## The routing service"):]
    block = section[section.index("**Configuration**"):]
    yaml_text = block[block.index("```yaml\n") + 8:block.index("\n```", block.index("```yaml"))]
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(yaml_text)
    s = Settings.load(cfg, environ={})
    assert s.model == "models:/demo-router@champion" and s.profiles["cheap"].lam == 500.0
    assert s.profiles["fast"].max_latency == 2.0 and s.cache.threshold is None and s.logbook.path is None


def test_router_reuses_the_cache_encoders_vectors_only_when_the_encoders_are_identical(policy):
    from router.data.synthetic import generate
    from router.encoders import HashingEncoder
    from serve.app import embed_for_cache
    from serve.cache import SemanticCache
    from serve.cache.thresholds import encoder_identity

    prompts = [[{"role": "user", "content": str(p)}] for p in generate(24, seed=5).outcomes.prompts]
    router = policy.router
    expected = router.route(prompts)

    def run(cache_encoder, poison: bool) -> tuple[list, int]:
        cache = SemanticCache(cache_encoder, threshold=0.9)
        texts = [cache.text(m) for m in prompts]
        pairs = embed_for_cache(cache, texts)
        assert np.array_equal(np.stack([u for _, u in pairs]), cache.embed(texts))  # the cache's own key rows
        known = [{t: (np.ones_like(raw) if poison else raw)} for t, (raw, _) in zip(texts, pairs)]
        decider = Decider(PolicyHolder(policy), shared_encoder=encoder_identity(cache.encoder_))

        async def main() -> list:
            return list(await asyncio.gather(*(decider.decide(m, RouteOptions(), known=k) for m, k in zip(prompts, known))))

        return asyncio.run(main()), decider.reused

    got, reused = run(HashingEncoder(dim=128), poison=False)  # the router's encoder: one encoding per text
    assert reused == len(prompts)
    assert [g.chosen for g in got] == expected.chosen
    np.testing.assert_array_equal(np.stack([g.quality for g in got]), expected.quality)
    got, reused = run(HashingEncoder(dim=64), poison=True)  # another encoder: its vectors are never used
    assert reused == 0 and [g.chosen for g in got] == expected.chosen


def test_service_processes_freeze_the_loaded_state_and_collect_young_objects_rarely():
    import gc

    from serve.app import GC_THRESHOLDS, ServeApp, create_app, tune_gc
    from serve.settings import Settings

    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
    assert create_app(Settings(model="m")).tune_gc  # python -m serve and its workers
    assert not ServeApp(Settings(model="m")).tune_gc  # an app embedded in another process
