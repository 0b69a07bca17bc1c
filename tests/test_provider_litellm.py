"""litellm, unchanged, calls every wire protocol of the local provider (api_base pointed at it)."""

from __future__ import annotations

import asyncio

import pytest

from serve.provider import running

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

PROMPT = "Name three primes."


@pytest.fixture(scope="module")
def litellm():
    lt = pytest.importorskip("litellm")
    lt.suppress_debug_info = True
    return lt


@pytest.fixture(scope="module")
def url():
    with running(latency_ms=0) as u:
        yield u


def _routes(url: str) -> list[tuple[str, str]]:
    # litellm's api_base per provider: OpenAI takes the SDK base (with /v1), Gemini the API version root
    return [("openai/m1", url + "/v1"), ("anthropic/m1", url), ("gemini/m1", url + "/v1beta"),
            ("ollama_chat/m1", url)]


async def _call(litellm, model, base, stream):
    kw = dict(model=model, api_base=base, api_key="x", messages=[{"role": "user", "content": PROMPT}],
              max_tokens=12, num_retries=0)
    if not stream:
        r = await litellm.acompletion(**kw)
        return r.choices[0].message.content, r.choices[0].finish_reason, r.usage.completion_tokens
    it = await litellm.acompletion(**kw, stream=True, stream_options={"include_usage": True})
    text, finish, usage = "", None, None
    async for ch in it:
        for c in ch.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
        usage = getattr(ch, "usage", None) or usage
    return text, finish, usage.completion_tokens


def test_every_protocol_through_litellm(litellm, url):
    async def run_all():
        return {(m, s): await _call(litellm, m, b, s) for m, b in _routes(url) for s in (False, True)}

    before = url.stats()["by_protocol"]
    results = asyncio.run(run_all())
    texts = {text for text, _, _ in results.values()}
    assert len(texts) == 1  # same model name + prompt -> the same deterministic text on every protocol
    (text,) = texts
    assert len(text.split()) == 12
    for (model, stream), (_, finish, n_out) in results.items():
        assert finish == "length", (model, stream)
        assert n_out == 12, (model, stream)
    after = url.stats()["by_protocol"]
    assert {p: after.get(p, 0) - before.get(p, 0) for p in ("openai", "anthropic", "gemini", "ollama")} == {
        "openai": 2, "anthropic": 2, "gemini": 2, "ollama": 2}


def test_pool_litellm_protocol_and_tools_path(litellm, url):
    from serve.providers import Deployment, ProviderPool

    tools = [{"type": "function", "function": {"name": "f", "description": "d",
                                               "parameters": {"type": "object", "properties": {}}}}]

    async def run():
        pool = ProviderPool([Deployment("via-litellm", "litellm", url, provider_model="anthropic/m2"),
                             Deployment("claude", "anthropic", url, provider_model="m2")],
                            keys={"via-litellm": "k-test", "claude": "k-test"})
        try:
            a = await pool.complete(["via-litellm"], [{"role": "user", "content": PROMPT}], {"max_tokens": 5})
            b = await pool.complete(["claude"], [{"role": "user", "content": PROMPT}],
                                    {"max_tokens": 5, "tools": tools})  # tools: translated by litellm
            chunks = [c async for c in pool.stream(["via-litellm"], [{"role": "user", "content": PROMPT}],
                                                   {"max_tokens": 5})]
            return a, b, chunks
        finally:
            await pool.aclose()

    a, b, chunks = asyncio.run(run())
    assert a.text == b.text and a.output_tokens == 5 and a.finish_reason == "length"
    assert "".join(c.text for c in chunks) == a.text and chunks[-1].finish_reason == "length"
