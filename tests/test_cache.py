"""The semantic cache with real encoders and real FAISS: keys, scopes, hits, TTL, eviction, invalidation."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from router.base import Encoder
from router.encoders import HashingEncoder, StaticEncoder
from router.errors import ConfigError, PersistenceError
from serve.cache import SemanticCache, encoder_identity
from serve.cache.index import ScopeIndex


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Counting(Encoder, register=False):
    """The real static encoder, counting how many texts it encoded."""

    kind = "static"

    def __init__(self, inner: Encoder) -> None:
        self.inner = inner
        self.calls = 0

    def get_config(self):
        return self.inner.get_config()

    @property
    def dim(self) -> int:
        return self.inner.dim

    def encode(self, texts):
        self.calls += len(texts)
        return self.inner.encode(texts)


@pytest.fixture(scope="module")
def static() -> StaticEncoder:
    enc = StaticEncoder()
    enc.encode(["warm up"])
    return enc


def body(text: str, **params) -> dict:
    msgs = params.pop("messages", None) or [{"role": "user", "content": text}]
    return {"model": "router", "messages": msgs, **params}


def put_q(cache: SemanticCache, tenant: str, text: str, answer: str = "A", **params) -> str:
    req = body(text, **params)
    return cache.put(SemanticCache.scope(tenant, req), SemanticCache.text(req["messages"]), {"answer": answer})


def get_q(cache: SemanticCache, tenant: str, text: str, **params):
    req = body(text, **params)
    return cache.get(SemanticCache.scope(tenant, req), SemanticCache.text(req["messages"]))


# ---------------------------------------------------------------------- hits and misses
def test_exact_hit_needs_no_embedding(static):
    enc = Counting(static)
    cache = SemanticCache(enc, threshold=0.9)
    req = body("What is the capital of France?")
    scope = SemanticCache.scope("acme", req)
    vec = cache.embed(["What is the capital of France?"])
    cache.put(scope, "What is the capital of France?", {"answer": "Paris"}, embedding=vec[0])
    before = enc.calls
    hit = cache.get_exact(scope, "  What is the capital of France?\r\n")
    assert hit is not None and hit.exact and hit.similarity == 1.0 and hit.value == {"answer": "Paris"}
    assert cache.get(scope, "What is the capital of France?").exact
    assert enc.calls == before
    assert cache.get_exact(scope, "What is the capital of Spain?") is None
    assert cache.stats()["hits_exact"] == 2 and cache.stats()["misses"] == 0


def test_shipped_threshold_paraphrase_hits_different_question_misses(static):
    cache = SemanticCache(static)  # shipped calibrated threshold
    assert cache.calibration_ is not None and cache.threshold_ == cache.calibration_["threshold"]
    put_q(cache, "acme", "What is the capital of France?", "Paris")
    put_q(cache, "acme", "Who wrote Hamlet?", "Shakespeare")
    hit = get_q(cache, "acme", "what is the capital of france")
    assert hit is not None and not hit.exact and hit.value == {"answer": "Paris"}
    assert cache.threshold_ <= hit.similarity < 1.0
    assert get_q(cache, "acme", "Who wrote Macbeth?") is None
    assert get_q(cache, "acme", "How do I learn Python?") is None
    s = cache.stats()
    assert (s["hits_semantic"], s["misses"], s["entries"]) == (1, 2, 2)


def test_semantic_hit_is_the_nearest_entry_in_scope(static):
    cache = SemanticCache(static, threshold=0.5)
    put_q(cache, "acme", "How do I reverse a list in Python?", "reverse")
    put_q(cache, "acme", "Who wrote Hamlet?", "hamlet")
    hit = get_q(cache, "acme", "How can I reverse a list in Python?")
    assert hit is not None and hit.value == {"answer": "reverse"}


def test_value_is_a_copy(static):
    cache = SemanticCache(static, threshold=0.9)
    put_q(cache, "acme", "Hi there", "hello")
    hit = get_q(cache, "acme", "Hi there")
    hit.value["answer"] = "changed"
    assert get_q(cache, "acme", "Hi there").value == {"answer": "hello"}


# ---------------------------------------------------------------------- scopes
def test_no_cross_tenant_hit_even_for_identical_text(static):
    cache = SemanticCache(static, threshold=-1.0)  # every same-scope lookup would hit
    questions = [f"Question number {i}: how do I configure service {i}?" for i in range(50)]
    for q in questions:
        put_q(cache, "tenant-a", q)
    for tenant in ("tenant-b", "Tenant-A", "tenant-a ", "tenant", "b"):
        for q in questions:
            assert get_q(cache, tenant, q) is None
    assert get_q(cache, "tenant-a", questions[0]) is not None
    assert get_q(cache, "tenant-a", "anything at all") is not None  # threshold -1: same scope always hits
    assert cache.stats()["scopes"] == 1


@pytest.mark.parametrize(
    "change",
    [
        {"temperature": 0.0},
        {"top_p": 0.5},
        {"seed": 7},
        {"max_tokens": 10},
        {"model": "gpt-4o"},
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
        {"response_format": {"type": "json_object"}},
        {"allowed_models": ["a", "b"]},
        {"budget": "cheap"},
        {"messages": [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Q?"}]},
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                      {"role": "user", "content": "Q?"}]},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "Q?"},
                                                   {"type": "image_url", "image_url": {"url": "http://x/1.png"}}]}]},
        {"messages": [{"role": "user", "content": "Q?", "name": "bob"}]},
    ],
)
def test_parameters_that_change_the_answer_split_the_scope(change):
    base = body("Q?", temperature=1.0)
    other = {**base, **change}
    assert SemanticCache.text(other["messages"]) == "Q?"
    assert SemanticCache.scope("acme", base) != SemanticCache.scope("acme", other)


def test_parameters_that_do_not_change_the_answer_share_the_scope():
    base = body("Q?", temperature=1.0, max_tokens=5)
    same = [
        {**base, "stream": True, "stream_options": {"include_usage": True}, "user": "u1", "metadata": {"k": 1}},
        {"max_tokens": 5.0, "temperature": 1, "model": "router", "messages": base["messages"]},  # key order, 1 == 1.0
    ]
    for other in same:
        assert SemanticCache.scope("acme", base) == SemanticCache.scope("acme", other)


def test_different_params_miss(static):
    cache = SemanticCache(static, threshold=0.5)
    put_q(cache, "acme", "Tell me a joke", temperature=0.0)
    assert get_q(cache, "acme", "Tell me a joke", temperature=0.0) is not None
    assert get_q(cache, "acme", "Tell me a joke", temperature=0.9) is None
    assert get_q(cache, "acme", "Tell me a joke", temperature=0.0,
                 messages=[{"role": "system", "content": "Be rude."}, {"role": "user", "content": "Tell me a joke"}]) is None


def test_image_only_turn_is_matched_exactly_only(static):
    cache = SemanticCache(static, threshold=-1.0)
    img = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/1.png"}}]}]
    req = body("", messages=img)
    scope = SemanticCache.scope("acme", req)
    assert SemanticCache.text(img) == ""
    cache.put(scope, "", {"answer": "a cat"})
    assert cache.get(scope, "").exact
    img2 = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/2.png"}}]}]
    assert cache.get(SemanticCache.scope("acme", body("", messages=img2)), "") is None


# ---------------------------------------------------------------------- lifetime
def test_ttl_expiry_with_injected_clock(static):
    clock = Clock()
    cache = SemanticCache(static, threshold=0.5, ttl_s=60.0, clock=clock)
    put_q(cache, "acme", "What is 2+2?", "4")
    clock.t += 59.0
    hit = get_q(cache, "acme", "What is 2+2?")
    assert hit is not None and hit.age_s == pytest.approx(59.0)
    clock.t += 1.0
    assert get_q(cache, "acme", "What is 2+2?") is None
    assert get_q(cache, "acme", "What is two plus two?") is None
    s = cache.stats()
    assert (s["entries"], s["expirations"], s["scopes"]) == (0, 1, 0)


def test_lru_eviction(static):
    cache = SemanticCache(static, threshold=0.99, max_entries=3)
    for q in ("one", "two", "three"):
        put_q(cache, "acme", f"question {q}")
    assert get_q(cache, "acme", "question one") is not None  # one is now the most recent
    put_q(cache, "acme", "question four")
    assert get_q(cache, "acme", "question two") is None
    assert all(get_q(cache, "acme", f"question {q}") is not None for q in ("one", "three", "four"))
    assert cache.stats()["evictions"] == 1 and len(cache) == 3


def test_eviction_beyond_many_entries_keeps_search_right():
    enc = HashingEncoder(dim=64)
    cache = SemanticCache(enc, threshold=0.999, max_entries=100)
    texts = [f"alpha{i} beta{i} gamma{i}" for i in range(1000)]
    vecs = cache.embed(texts)
    for t, v in zip(texts, vecs):
        cache.put(SemanticCache.scope("acme", body("x")), t, {"t": t}, embedding=v)
    scope = SemanticCache.scope("acme", body("x"))
    assert len(cache) == 100 and cache.stats()["evictions"] == 900
    for t, v in zip(texts[-100:], vecs[-100:]):  # semantic path (text differs in case, same vector)
        hit = cache.get(scope, t.upper(), embedding=v)
        assert hit is not None and hit.value == {"t": t}
    for t, v in zip(texts[:900:37], vecs[:900:37]):
        assert cache.get(scope, t, embedding=v) is None


def test_scope_index_matches_brute_force_with_removals():
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(500, 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    idx = ScopeIndex(16)
    for i, v in enumerate(vecs):
        idx.add(i, v)
    dead = set(rng.choice(500, 300, replace=False).tolist())
    for i in dead:
        idx.remove(i)
    live = np.array(sorted(set(range(500)) - dead))
    assert len(idx) == 200
    for q in rng.normal(size=(50, 16)).astype(np.float32):
        q /= np.linalg.norm(q)
        label, sim = idx.search(q)
        sims = vecs[live] @ q
        assert label == live[int(np.argmax(sims))] and sim == pytest.approx(float(sims.max()), abs=1e-5)


@pytest.mark.parametrize("ivf", [False, True])
def test_batched_search_finds_what_one_by_one_search_finds(ivf):
    rng = np.random.default_rng(1)
    vecs = rng.normal(size=(600, 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    idx = ScopeIndex(16, ivf_from=300 if ivf else 10**9, nprobe=64)
    for i, v in enumerate(vecs):
        idx.add(i, v)
    if ivf:
        from serve.cache.index import build_ivf

        idx.install(build_ivf(*idx.plan_rebuild(), nprobe=64))
    assert idx.kind == ("ivf" if ivf else "flat")
    for i in rng.choice(600, 250, replace=False).tolist():
        idx.remove(i)
    queries = rng.normal(size=(40, 16)).astype(np.float32)
    queries[:20] = vecs[:20] + 0.01 * queries[:20]  # some near stored (or removed) vectors
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    one = [idx.search(q) for q in queries]
    many = idx.search_many(queries)
    assert [f[0] for f in many] == [f[0] for f in one]  # type: ignore[index]
    assert np.allclose([f[1] for f in many], [f[1] for f in one], atol=1e-5)  # type: ignore[index]


def test_get_many_answers_as_get_does(static):
    cache = SemanticCache(static, background_rebuild=False)
    stored = ["What is the capital of France?", "How do I sort a list in Python?", "Who wrote Hamlet?"]
    for tenant in ("acme", "globex"):
        for text in stored:
            put_q(cache, tenant, text, answer=f"{tenant}:{text}")
    asks = [("acme", "What is the capital of France?"), ("acme", "what's the capital city of France?"),
            ("globex", "Who wrote Hamlet?"), ("acme", "How many legs does a spider have?"),
            ("initech", "Who wrote Hamlet?"), ("globex", "How do I sort a list in python")]
    queries = [(SemanticCache.scope(t, body(q)), q, cache.embed([q])[0]) for t, q in asks]
    before = cache.stats()
    many = cache.get_many(queries)
    after_many = cache.stats()
    one = [cache.get(s, q, embedding=e) for s, q, e in queries]
    assert [None if h is None else (h.value, h.exact) for h in many] == \
        [None if h is None else (h.value, h.exact) for h in one]
    assert sum(h is not None for h in many) >= 3  # exact hits at least; no cross-tenant answer
    assert all(h is None or h.value["answer"].startswith(t + ":") for (t, _), h in zip(asks, many))
    counted = {k: after_many[k] - before[k] for k in ("hits_exact", "hits_semantic", "misses")}
    assert counted == {"hits_exact": sum(h is not None and h.exact for h in one),
                       "hits_semantic": sum(h is not None and not h.exact for h in one),
                       "misses": sum(h is None for h in one)}


# ---------------------------------------------------------------------- invalidation
def test_invalidate_by_id_text_scope_and_tenant(static):
    cache = SemanticCache(static, threshold=0.5)
    a1 = put_q(cache, "a", "first question here")
    put_q(cache, "a", "second question here")
    put_q(cache, "a", "third question here", temperature=0.0)
    put_q(cache, "b", "first question here")
    assert cache.invalidate(entry_id=a1) == 1
    assert cache.invalidate(entry_id=a1) == 0
    assert get_q(cache, "a", "first question here").value == {"answer": "A"}  # semantic: "second" is near
    scope_a = SemanticCache.scope("a", body("x"))
    assert cache.invalidate(scope=scope_a, text="second question here ") == 1
    assert get_q(cache, "a", "second question here") is None
    assert cache.invalidate(tenant="a") == 1  # the temperature=0 entry
    assert get_q(cache, "a", "third question here", temperature=0.0) is None
    assert get_q(cache, "b", "first question here") is not None
    assert cache.invalidate(scope=SemanticCache.scope("b", body("y"))) == 1
    assert len(cache) == 0 and cache.stats()["invalidations"] == 4


def test_replacing_an_entry_keeps_one(static):
    cache = SemanticCache(static, threshold=0.5)
    first = put_q(cache, "a", "same question", "old")
    second = put_q(cache, "a", " same question ", "new")
    assert first != second and len(cache) == 1
    assert get_q(cache, "a", "same question").value == {"answer": "new"}


# ---------------------------------------------------------------------- threshold files
def test_threshold_file_for_another_encoder_is_refused(tmp_path, static):
    doc = {"format": "serve.cache.threshold/1", "encoder": encoder_identity(static), "threshold": 0.9}
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    assert SemanticCache(static, threshold_file=path).threshold_ == 0.9
    with pytest.raises(ConfigError, match="calibrated for encoder .*'static'.* but this cache uses .*'hashing'"):
        SemanticCache(HashingEncoder(dim=32), threshold_file=path)
    with pytest.raises(ConfigError, match="no shipped cache threshold for encoder"):
        SemanticCache(HashingEncoder(dim=32))
    with pytest.raises(ConfigError, match="calibrated for encoder"):
        SemanticCache(StaticEncoder(pca_dims=64), threshold_file=path)
    assert SemanticCache(StaticEncoder(cache_dir=str(tmp_path)), threshold_file=path).threshold_ == 0.9


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "cannot be read as JSON"),
        (json.dumps({"threshold": 0.5}), "is not a threshold file"),
        (json.dumps({"format": "serve.cache.threshold/1", "encoder": {"kind": "static"}, "threshold": 3}),
         "must be a number in"),
        (json.dumps({"format": "serve.cache.threshold/1", "threshold": 0.5}), "'encoder' must be"),
    ],
)
def test_bad_threshold_files(tmp_path, content, match):
    path = tmp_path / "t.json"
    path.write_text(content)
    with pytest.raises(PersistenceError, match=match):
        SemanticCache(HashingEncoder(), threshold_file=path)


def test_missing_threshold_file(tmp_path):
    with pytest.raises(PersistenceError, match="does not exist"):
        SemanticCache(HashingEncoder(), threshold_file=tmp_path / "nope.json")


# ---------------------------------------------------------------------- bad input
SCOPE = "acme#" + "0" * 32


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ttl_s": 0}, "ttl_s must be a positive"),
        ({"ttl_s": float("nan")}, "ttl_s must be a positive"),
        ({"max_entries": 0}, "max_entries must be an int >= 1"),
        ({"max_entries": 2.5}, "max_entries must be an int >= 1"),
        ({"threshold": 1.5}, r"threshold must be a cosine similarity in \[-1, 1\]"),
        ({"threshold": 0.5, "threshold_file": "x.json"}, "not both"),
        ({"clock": 3}, "clock must be a callable"),
        ({"store": {}}, "store must be a serve.cache.CacheStore"),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        SemanticCache(HashingEncoder(), **{"threshold": 0.5, **kwargs})


def test_encoder_must_be_an_encoder():
    with pytest.raises(ConfigError, match="encoder must be a router Encoder"):
        SemanticCache("static", threshold=0.5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("tenant", "request_", "match"),
    [
        ("", body("q"), "tenant must be a non-empty str"),
        (None, body("q"), "tenant must be a non-empty str"),
        ("a", "not a dict", "request must be the chat request body"),
        ("a", {"model": "router"}, "request has no 'messages'"),
        ("a", {"messages": []}, "messages must be a non-empty list"),
        ("a", {"messages": "hi"}, "messages must be a non-empty list"),
        ("a", {"messages": [{"content": "hi"}]}, "message 0 must be a dict with a string 'role'"),
        ("a", {"messages": [{"role": "user", "content": 5}]}, "message 0 content must be"),
        ("a", {"messages": [{"role": "system", "content": "hi"}]}, "no 'user' turn"),
        ("a", {**body("q"), "temperature": float("nan")}, "only finite numbers"),
        ("a", {**body("q"), "x": object()}, "JSON values only"),
    ],
)
def test_scope_errors(tenant, request_, match):
    with pytest.raises(ConfigError, match=match):
        SemanticCache.scope(tenant, request_)


def test_lookup_and_put_errors():
    cache = SemanticCache(HashingEncoder(dim=8), threshold=0.5)
    with pytest.raises(ConfigError, match="is not a cache scope; build it with SemanticCache.scope"):
        cache.get("acme", "q")
    with pytest.raises(ConfigError, match="is not a cache scope"):
        cache.put("acme#123", "q", {})
    with pytest.raises(ConfigError, match="text must be a str"):
        cache.get(SCOPE, ["q"])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="value must be a dict"):
        cache.put(SCOPE, "q", "answer")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="value must be JSON-serialisable"):
        cache.put(SCOPE, "q", {"x": {1, 2}})
    with pytest.raises(ConfigError, match="value must be JSON-serialisable"):
        cache.put(SCOPE, "q", {"x": float("inf")})
    with pytest.raises(ConfigError, match="embedding has width 4 but this cache's encoder gives 8"):
        cache.put(SCOPE, "q", {}, embedding=np.ones(4))
    with pytest.raises(ConfigError, match="NaN or infinite"):
        cache.put(SCOPE, "q", {}, embedding=np.full(8, np.nan))
    with pytest.raises(ConfigError, match=r"shape \(dim,\) or \(1, dim\)"):
        cache.put(SCOPE, "q", {}, embedding=np.ones((2, 8)))
    with pytest.raises(ConfigError, match="wrap it"):
        cache.embed("q")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="invalidate takes entry_id=, scope=, scope= with text=, or tenant="):
        cache.invalidate()
    with pytest.raises(ConfigError, match="got \\['text'\\]"):
        cache.invalidate(text="q")
    with pytest.raises(ConfigError, match="got \\['entry_id', 'tenant'\\]"):
        cache.invalidate(entry_id="x", tenant="a")
    assert len(cache) == 0


def test_text_without_meaning_is_exact_only():
    cache = SemanticCache(HashingEncoder(dim=8), threshold=-1.0)
    assert not cache.embed(["?!"]).any()  # the hashing encoder sees no words
    cache.put(SCOPE, "?!", {"a": 1})
    assert cache.get(SCOPE, "?!").exact
    assert cache.get(SCOPE, "!?") is None


# ---------------------------------------------------------------------- threads
def test_concurrent_gets_and_puts_stay_consistent():
    cache = SemanticCache(HashingEncoder(dim=32), threshold=0.95, max_entries=50)
    scopes = [SemanticCache.scope(t, body("x")) for t in ("a", "b", "c")]
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            for _ in range(300):
                scope = scopes[int(rng.integers(3))]
                text = f"word{int(rng.integers(80))} other{int(rng.integers(5))}"
                if rng.random() < 0.5:
                    cache.put(scope, text, {"text": text, "scope": scope})
                else:
                    hit = cache.get(scope, text)
                    if hit is not None:
                        assert hit.value["scope"] == scope
                        assert not hit.exact or hit.value["text"] == text
        except BaseException as exc:  # noqa: BLE001 - re-raised below in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    s = cache.stats()
    assert s["entries"] == len(cache) <= 50
    assert s["hits_exact"] + s["hits_semantic"] + s["misses"] > 0


def test_search_leaves_the_faiss_thread_setting_alone():
    import faiss

    before = faiss.omp_get_max_threads()
    idx = ScopeIndex(4)
    idx.add(1, np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32))
    assert idx.search(np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32))[0] == 1
    assert faiss.omp_get_max_threads() == before


@pytest.mark.parametrize("background", [False, True])
def test_large_scope_moves_to_inverted_lists_and_keeps_every_entry(background):
    cache = SemanticCache(HashingEncoder(dim=64), threshold=0.999, ivf_from=256, max_entries=5000,
                          background_rebuild=background)
    scope = SemanticCache.scope("acme", body("x"))
    texts = [f"alpha{i} beta{i % 7} gamma{i % 11}" for i in range(2100)]
    vecs = cache.embed(texts)
    for t, v in zip(texts, vecs):
        cache.put(scope, t, {"t": t}, embedding=v)
    assert cache.wait_for_rebuilds(timeout=60)
    s = cache.stats()
    assert s["ivf_scopes"] == 1
    assert s["rebuilds"] == 2 if not background else s["rebuilds"] >= 1  # at 256 and 4 x 256 entries (regrow 4)
    for t, v in zip(texts[::13], vecs[::13]):  # a vector's own cell is always probed: found exactly
        hit = cache.get(scope, t.upper(), embedding=v)
        assert hit is not None and not hit.exact and hit.value == {"t": t}
    assert cache.invalidate(scope=scope) == 2100 and cache.stats()["ivf_scopes"] == 0


def test_changes_during_a_rebuild_are_replayed():
    from serve.cache.index import build_ivf

    rng = np.random.default_rng(1)
    vecs = rng.normal(size=(400, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    idx = ScopeIndex(8, ivf_from=300, nprobe=64)
    for i in range(300):
        idx.add(i, vecs[i])
    plan = idx.plan_rebuild()
    assert plan is not None and plan[0].shape == (300, 8) and idx.plan_rebuild() is None
    built = build_ivf(*plan, nprobe=64)
    idx.remove(5)
    idx.add(300, vecs[300])
    idx.add(301, vecs[301])
    idx.remove(301)
    idx.install(built)
    assert idx.kind == "ivf" and len(idx) == 300
    assert idx.search(vecs[300])[0] == 300
    assert idx.search(vecs[5])[0] != 5 and idx.search(vecs[301])[0] != 301


def test_importing_the_cache_loads_nothing_heavy():
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, json, serve.cache, serve.cache.calibrate\n"
            "print(json.dumps([m for m in ('faiss', 'torch', 'model2vec', 'sentence_transformers', 'polars')"
            " if m in sys.modules]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


@pytest.mark.slow
def test_minilm_with_its_shipped_threshold():
    from router.encoders import SentenceTransformerEncoder

    cache = SemanticCache(SentenceTransformerEncoder())
    assert cache.calibration_["encoder"]["kind"] == "sentence_transformer"
    put_q(cache, "acme", "How do I reverse a list in Python?", "reversed(xs)")
    put_q(cache, "acme", "How many legs does a spider have?", "eight")
    put_q(cache, "acme", "Who wrote Hamlet?", "Shakespeare")
    assert get_q(cache, "acme", "How can I reverse a list in Python?").value == {"answer": "reversed(xs)"}
    assert get_q(cache, "acme", "How many eyes does a spider have?") is None
    assert get_q(cache, "acme", "Who wrote Macbeth?") is None
    assert get_q(cache, "acme", "How do I sort a list in Python?") is None
    assert get_q(cache, "other", "How can I reverse a list in Python?") is None


def test_a_bad_embedding_is_refused_even_when_the_scope_is_empty():
    cache = SemanticCache(HashingEncoder(dim=8), threshold=0.5)
    with pytest.raises(ConfigError, match="embedding has width 3"):
        cache.get(SCOPE, "q", embedding=np.ones(3))


def test_memoised_scopes_of_simple_requests_equal_the_full_digest(monkeypatch):
    """Single-turn requests with plain parameters take their scope from a memo; it must be the digest
    the full canonical JSON gives, and values that compare equal but key differently must not share."""
    from serve.cache import keys

    bodies = [
        body("hi"), body("other question"), body("hi", max_tokens=64), body("hi", n=True), body("hi", n=1),
        body("hi", n=1.0), body("hi", temperature=0), body("hi", temperature=False), body("hi", stop=None),
        {"model": "router", "messages": [{"role": "user", "content": "hi", "name": "bob"}]},
        {"model": "router", "messages": [{"role": "user", "content": "hi", "name": None}]},
        body("hi", tools=[{"type": "function", "function": {"name": "f"}}]),  # not simple: full path
    ]
    keys._SIMPLE_SCOPES.clear()
    memo = [[SemanticCache.scope(t, b) for b in bodies] for t in ("acme", "zeta", "acme")]
    assert len(keys._SIMPLE_SCOPES) == 2 * (len(bodies) - 2)  # the first two share one; tools are not simple
    monkeypatch.setattr(keys, "_simple_key", lambda tenant, request: None)
    full = [[SemanticCache.scope(t, b) for b in bodies] for t in ("acme", "zeta", "acme")]
    assert memo == full
    assert full[0][3] != full[0][4] and full[0][4] == full[0][5]  # n=True vs n=1 differ; 1 and 1.0 agree
    assert full[0][6] != full[0][7]  # temperature 0 vs False
    assert full[0][0] == full[0][1]  # the last user text is not part of the scope
