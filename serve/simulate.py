"""``python -m serve.simulate``: replay a data set's prompts against the service, with true feedback.

    python -m serve.simulate --url http://127.0.0.1:8000 --data routerbench --rate 20 --requests 500 \\
        [--feedback-share 1.0] [--seed 0] [--task mbpp] [--lam 0] [--users 50] [--no-cache] [--out rows.jsonl]

Prompts come from a registered source (:func:`router.data.registry.load_source`: ``demo``,
``routerbench``, ...) or an outcomes file, optionally only some tasks (``--task``, repeatable),
shuffled with ``--seed``. They are sent open-loop at ``--rate`` requests per second (a request is
sent on schedule whether or not earlier ones have finished, so queueing shows) through the OpenAI
Python client with ``model: "router"``. The model that answered (the response's ``model``, the
``x-route-model`` header when absent) is looked up in the data: its logged quality and cost on
that prompt are the truth. A ``--feedback-share`` of the requests (chosen with the seed) get
``POST /v1/feedback`` with that quality as the score, so the service's log holds true rewards.
``--users N`` sends each request as one of N end users (the OpenAI ``user`` field ``user-<k>``,
drawn with the seed), so an experiment sticky by user splits the simulated traffic.

The summary printed (JSON) holds ``requests``, ``ok``, ``errors`` (by kind), ``feedback_sent``,
``feedback_ok``, ``mean_quality`` (true), ``spend`` (true USD), ``mean_cost``, ``reward`` (mean
of ``quality - lam * cost``), ``lam``, ``models`` (answers per model), ``versions`` (answers per
policy version, the response's ``x-route-policy-version``), ``achieved_rate`` and ``wall_s``.
``--out`` writes one JSON line per request, in the order they were sent (row, request id, model,
policy version, quality, cost, and ``sent_s`` / ``answered_s``: when the request was sent and its
answer (or error) arrived, in seconds since the simulation started, on one clock).

In a program, :func:`simulate` also takes ``on_result`` (called with each request's row as its
answer and feedback are done) and ``stop`` (a ``threading.Event``: once set, no further request is
sent; those in flight finish), e.g. to keep traffic flowing until the service swaps its policy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["main", "request_messages", "request_plan", "simulate"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m serve.simulate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="the service's base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--data", required=True, help="a registered source name (demo, routerbench, ...) or a path")
    p.add_argument("--rate", type=float, required=True, help="requests per second (open loop)")
    p.add_argument("--requests", type=int, required=True, help="requests to send")
    p.add_argument("--feedback-share", dest="feedback_share", type=float, default=1.0,
                   help="share of requests that get feedback with the true quality (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the prompt order and the feedback draw")
    p.add_argument("--task", action="append", default=None, help="only prompts of this task (repeatable)")
    p.add_argument("--lam", type=float, default=0.0, help="cost weight of the reported reward (per USD)")
    p.add_argument("--users", type=int, default=0,
                   help="send each request as one of this many users (the OpenAI user field; 0: none)")
    p.add_argument("--model", default="router", help="the model field sent (default router)")
    p.add_argument("--no-cache", dest="no_cache", action="store_true", help="ask the service not to use its cache")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    p.add_argument("--out", default=None, help="write one JSON line per request here")
    return p


@dataclass
class _Result:
    row: int
    user: str | None = None
    request_id: str | None = None
    model: str | None = None
    policy_version: str | None = None
    sent_s: float | None = None
    answered_s: float | None = None
    quality: float | None = None
    cost: float | None = None
    error: str | None = None
    feedback: int | None = None  # HTTP status of the feedback, None when none was sent (0: no answer)
    feedback_error: str | None = None


def _messages(outcomes: Any, row: int) -> list[dict[str, Any]]:
    if outcomes.messages is not None and outcomes.messages[row]:
        msgs = json.loads(outcomes.messages[row])
        if isinstance(msgs, list) and msgs:
            return msgs
    return [{"role": "user", "content": str(outcomes.prompts[row])}]


async def _one(client: Any, http: Any, outcomes: Any, pos: dict[str, int], row: int, send_feedback: bool,
               args: argparse.Namespace, t0: float, user: str | None = None) -> _Result:
    import openai

    loop = asyncio.get_running_loop()
    res = _Result(row, user=user, sent_s=loop.time() - t0)
    extra = {"routing": {"cache": False}} if args.no_cache else None
    who = {"user": user} if user is not None else {}
    try:
        raw = await client.chat.completions.with_raw_response.create(
            model=args.model, messages=_messages(outcomes, row), extra_body=extra, **who)
        done = raw.parse()
    except openai.APIStatusError as exc:
        res.error = f"http_{exc.status_code}"
        return res
    except openai.APIError as exc:
        res.error = type(exc).__name__
        return res
    finally:
        res.answered_s = loop.time() - t0
    res.request_id = raw.headers.get("x-request-id")
    res.policy_version = raw.headers.get("x-route-policy-version")
    model = done.model or raw.headers.get("x-route-model")
    res.model = model
    j = pos.get(model or "")
    if j is None:
        res.error = "model_not_in_data"
        return res
    res.quality = float(outcomes.quality[row, j])
    res.cost = float(outcomes.cost[row, j])
    if send_feedback and res.request_id:
        import httpx

        for attempt in range(2):  # one retry when the connection failed before an answer
            try:
                r = await http.post("/v1/feedback", json={"request_id": res.request_id, "score": res.quality})
            except httpx.TransportError as exc:
                res.feedback, res.feedback_error = 0, f"{type(exc).__name__}: {exc}"
                continue
            except Exception as exc:  # counted: a feedback that did not arrive
                res.feedback, res.feedback_error = 0, f"{type(exc).__name__}: {exc}"
                break
            # a 409 after a failed first attempt: that attempt did reach the service and was recorded
            res.feedback = 200 if (r.status_code == 409 and attempt == 1) else r.status_code
            break
    return res


async def _run(args: argparse.Namespace, outcomes: Any, rows: np.ndarray, fb: np.ndarray,
               stop: threading.Event | None, on_result: Callable[[dict[str, Any]], None] | None,
               users: list[str | None]) -> list[_Result]:
    import httpx
    import openai

    base = args.url.rstrip("/")
    # idle connections are dropped well before a server's keep-alive timeout (uvicorn: 5 s, the same as httpx's
    # default), so a request never races the server closing the connection it is sent on
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200, keepalive_expiry=1.0)
    client = openai.AsyncOpenAI(base_url=base + "/v1", api_key="simulator", max_retries=0, timeout=args.timeout,
                                http_client=httpx.AsyncClient(limits=limits, timeout=args.timeout))  # type: ignore[arg-type]
    pos = {m: j for j, m in enumerate(outcomes.models)}
    async with httpx.AsyncClient(base_url=base, timeout=args.timeout, limits=limits) as http:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        tasks = []
        for i, row in enumerate(rows):
            delay = t0 + i / args.rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if stop is not None and stop.is_set():
                break
            task = asyncio.ensure_future(_one(client, http, outcomes, pos, int(row), bool(fb[i]), args, t0,
                                              users[i]))
            if on_result is not None:
                task.add_done_callback(lambda t: on_result(_row(outcomes, t.result())))  # type: ignore[misc]
            tasks.append(task)
        results = list(await asyncio.gather(*tasks))
    await client.close()
    return results


def _row(outcomes: Any, r: _Result) -> dict[str, Any]:
    """One request's line of ``--out`` (and what ``on_result`` receives)."""
    return {"row": r.row, "prompt_id": str(outcomes.prompt_ids[r.row]), **{k: v for k, v in asdict(r).items() if k != "row"}}


def request_plan(outcomes: Any, requests: int, seed: int, task: Any = None, feedback_share: float = 1.0,
                 name: str = "data") -> tuple[np.ndarray, np.ndarray]:
    """The simulator's plan: (data rows sent, in order (requests,); whether each gets feedback (requests,)).

    The rows of ``task`` (all when None) shuffled by ``seed``, repeated when more requests than
    prompts are asked; feedback is drawn with the same seed. Tests that drive the online learner in
    process use it to replay exactly the stream a simulation sends.
    """
    rows, fb, _ = _plan(outcomes, requests, seed, task, feedback_share, name)
    return rows, fb


def _plan(outcomes: Any, requests: int, seed: int, task: Any, feedback_share: float,
          name: str) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
    """:func:`request_plan`, and the generator it drew from (the simulator draws its users next)."""
    from router.errors import ConfigError

    idx = np.arange(outcomes.n_prompts)
    if task:
        idx = idx[np.isin(outcomes.tasks, task)]
        if idx.size == 0:
            raise ConfigError(f"{name}: no prompts of task(s) {task}; tasks are {sorted(set(outcomes.tasks))}.")
    rng = np.random.default_rng(seed)
    order = rng.permutation(idx)
    rows = np.resize(order, requests)  # repeats the data when more requests than prompts are asked
    return rows, rng.random(requests) < feedback_share, rng


def request_messages(outcomes: Any, row: int) -> list[dict[str, Any]]:
    """The chat messages the simulator sends for data row ``row``."""
    return _messages(outcomes, row)


def simulate(args: argparse.Namespace, *, stop: threading.Event | None = None,
             on_result: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run the simulation ``args`` describes (see the module docs); returns the summary.

    ``on_result(row)`` is called (from the simulator's own thread) as each request is done; once ``stop``
    is set no further request is sent, and the summary counts the requests that were.
    """
    from router.data.registry import load_source
    from router.errors import ConfigError

    if args.rate <= 0 or args.requests < 1:
        raise ConfigError("--rate must be > 0 and --requests >= 1.")
    if not 0.0 <= args.feedback_share <= 1.0:
        raise ConfigError(f"--feedback-share {args.feedback_share} must be in [0, 1].")
    n_users = int(getattr(args, "users", 0) or 0)  # callers building the Namespace themselves may leave it out
    if n_users < 0:
        raise ConfigError(f"--users {n_users} must be >= 0 (0: requests name no user).")
    outcomes = load_source(args.data)
    rows, fb, rng = _plan(outcomes, args.requests, args.seed, args.task, args.feedback_share, args.data)
    users: list[str | None] = ([f"user-{k}" for k in rng.integers(0, n_users, args.requests)] if n_users
                               else [None] * args.requests)
    t0 = time.perf_counter()
    results = asyncio.run(_run(args, outcomes, rows, fb, stop, on_result, users))
    wall = time.perf_counter() - t0
    ok = [r for r in results if r.error is None]
    q = np.array([r.quality for r in ok], dtype=float)
    c = np.array([r.cost for r in ok], dtype=float)
    summary = {
        "requests": len(results), "ok": len(ok),
        "errors": dict(Counter(r.error for r in results if r.error is not None)),
        "feedback_sent": sum(r.feedback is not None for r in results),
        "feedback_ok": sum(r.feedback == 200 for r in results),
        "feedback_errors": dict(Counter((r.feedback_error or f"http_{r.feedback}").split(":")[0]
                                        for r in results if r.feedback not in (None, 200))),
        "mean_quality": float(q.mean()) if q.size else None,
        "spend": float(c.sum()), "mean_cost": float(c.mean()) if c.size else None,
        "reward": float((q - args.lam * c).mean()) if q.size else None, "lam": args.lam,
        "models": dict(Counter(r.model for r in ok)),
        "versions": dict(Counter(r.policy_version for r in ok)),
        "achieved_rate": len(results) / wall if wall > 0 else None, "wall_s": wall,
        "data": args.data, "tasks": args.task, "seed": args.seed,
    }
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            for r in results:
                fh.write(json.dumps(_row(outcomes, r)) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from router.errors import RoutingError

    try:
        summary = simulate(args)
    except RoutingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=1))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
