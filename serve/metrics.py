"""Plain in-process counters and histograms, rendered in the Prometheus text format on ``/metrics``.

No client library: a counter is a dict entry, a histogram a list of bucket counts, so recording
costs a dict lookup and an add. Each worker process (``--workers N``) keeps its own numbers; every
series carries no process label, so scrape each worker or run one.

>>> m = Metrics()
>>> m.request("/v1/chat/completions", 200)
>>> m.added_latency.observe(0.004)
>>> text = m.render()
>>> 'router_requests_total{path="/v1/chat/completions",status="200"} 1' in text
True
>>> 'router_added_latency_seconds_bucket{le="0.005"} 1' in text
True
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict

__all__ = ["Histogram", "LabelledHistogram", "Metrics"]

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
PROVIDER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Histogram:
    """Cumulative-bucket histogram (Prometheus semantics) of one series."""

    __slots__ = ("buckets", "counts", "sum", "count")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        out = []
        acc = 0
        for le, n in zip(self.buckets, self.counts):
            acc += n
            out.append(f'{name}_bucket{{{labels}{sep}le="{le:g}"}} {acc}')
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}')
        lab = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{lab} {self.sum:.9g}")
        out.append(f"{name}_count{lab} {self.count}")
        return out


class LabelledHistogram:
    """One :class:`Histogram` per label value (e.g. per model)."""

    def __init__(self, label: str, buckets: tuple[float, ...]) -> None:
        self.label = label
        self.buckets = buckets
        self.series: dict[str, Histogram] = {}

    def observe(self, key: str, value: float) -> None:
        h = self.series.get(key)
        if h is None:
            h = self.series[key] = Histogram(self.buckets)
        h.observe(value)

    def lines(self, name: str) -> list[str]:
        out: list[str] = []
        for key in sorted(self.series):
            out.extend(self.series[key].lines(name, f'{self.label}="{_esc(key)}"'))
        return out


class Metrics:
    """Every number the service exports. Methods are called on the event loop thread only."""

    def __init__(self) -> None:
        self.requests: defaultdict[tuple[str, int], int] = defaultdict(int)
        self.decisions: defaultdict[tuple[str, str], int] = defaultdict(int)  # (model, kind: routed|passthrough)
        self.answered: defaultdict[str, int] = defaultdict(int)
        self.fallbacks = 0
        self.cache: defaultdict[str, int] = defaultdict(int)  # hit_exact, hit_semantic, miss, bypass
        self.provider_errors: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.provider_latency = LabelledHistogram("model", PROVIDER_BUCKETS)
        self.added_latency = Histogram(LATENCY_BUCKETS)
        self.decide_latency = Histogram(LATENCY_BUCKETS)
        self.spend: defaultdict[str, float] = defaultdict(float)
        self.tokens: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.batch_sizes = Histogram((1, 2, 4, 8, 16, 32, 64, 128))
        self.policy_swaps = 0
        self.policy_errors = 0
        self.policy_version = ""
        self.stream_breaks = 0
        self.inflight = 0
        # the loop: traffic log, feedback, out-of-distribution prompts, online learning
        self.log_commits = 0  # updated from the writer thread (an int add; read only for display)
        self.log_lines = 0
        self.feedback: defaultdict[int, int] = defaultdict(int)  # by HTTP status
        self.ood_checked = 0
        self.ood_flagged = 0
        self.online_updates = 0
        self.online_explored = 0

    def committed(self, lines: int, seconds: float) -> None:
        """Called by the traffic log's writer thread after each commit."""
        self.log_commits += 1
        self.log_lines += lines

    def request(self, path: str, status: int) -> None:
        self.requests[(path, status)] += 1

    def render(self) -> str:
        """The Prometheus text exposition format (version 0.0.4)."""
        out: list[str] = []

        def head(name: str, kind: str, text: str) -> None:
            out.append(f"# HELP {name} {text}")
            out.append(f"# TYPE {name} {kind}")

        head("router_requests_total", "counter", "HTTP requests by path and status code.")
        for (path, status), n in sorted(self.requests.items()):
            out.append(f'router_requests_total{{path="{_esc(path)}",status="{status}"}} {n}')
        head("router_inflight_requests", "gauge", "Chat requests being served now.")
        out.append(f"router_inflight_requests {self.inflight}")
        head("router_decisions_total", "counter", "Models chosen: kind=routed by the router, passthrough by name.")
        for (model, kind), n in sorted(self.decisions.items()):
            out.append(f'router_decisions_total{{model="{_esc(model)}",kind="{kind}"}} {n}')
        head("router_answered_total", "counter", "Completions by the model that actually answered.")
        for model, n in sorted(self.answered.items()):
            out.append(f'router_answered_total{{model="{_esc(model)}"}} {n}')
        head("router_fallbacks_total", "counter", "Requests answered by another model than the chosen one.")
        out.append(f"router_fallbacks_total {self.fallbacks}")
        head("router_cache_requests_total", "counter", "Cache lookups by outcome (hit_exact, hit_semantic, miss, bypass).")
        for outcome, n in sorted(self.cache.items()):
            out.append(f'router_cache_requests_total{{outcome="{outcome}"}} {n}')
        head("router_provider_errors_total", "counter", "Failed provider requests by model and status.")
        for (model, code), count in sorted(self.provider_errors.items()):
            out.append(f'router_provider_errors_total{{model="{_esc(model)}",status="{_esc(code)}"}} {count}')
        head("router_stream_breaks_total", "counter", "Streams that ended with an error after the first token.")
        out.append(f"router_stream_breaks_total {self.stream_breaks}")
        head("router_provider_latency_seconds", "histogram", "Provider time of answered requests by model.")
        out.extend(self.provider_latency.lines("router_provider_latency_seconds"))
        head("router_added_latency_seconds", "histogram",
             "Time the service adds: total time minus time waiting for the provider (to the first token when streamed).")
        out.extend(self.added_latency.lines("router_added_latency_seconds"))
        head("router_decide_latency_seconds", "histogram", "Time from queueing a decision to its result.")
        out.extend(self.decide_latency.lines("router_decide_latency_seconds"))
        head("router_decision_batch_size", "histogram", "Requests decided together in one Router.route call.")
        out.extend(self.batch_sizes.lines("router_decision_batch_size"))
        head("router_spend_usd_total", "counter", "Provider cost in USD by answering model.")
        for model, usd in sorted(self.spend.items()):
            out.append(f'router_spend_usd_total{{model="{_esc(model)}"}} {usd:.9g}')
        head("router_tokens_total", "counter", "Tokens by answering model and direction.")
        for (model, kind), n in sorted(self.tokens.items()):
            out.append(f'router_tokens_total{{model="{_esc(model)}",kind="{kind}"}} {n}')
        head("router_policy_info", "gauge", "The policy version serving now (value 1).")
        out.append(f'router_policy_info{{version="{_esc(self.policy_version)}"}} 1')
        head("router_policy_swaps_total", "counter", "Times a new policy version was swapped in.")
        out.append(f"router_policy_swaps_total {self.policy_swaps}")
        head("router_policy_load_errors_total", "counter", "Failed attempts to load a new policy version.")
        out.append(f"router_policy_load_errors_total {self.policy_errors}")
        head("router_log_commits_total", "counter", "Group commits (write + fsync) of the traffic log.")
        out.append(f"router_log_commits_total {self.log_commits}")
        head("router_log_lines_total", "counter", "Lines made durable in the traffic log (requests and feedback).")
        out.append(f"router_log_lines_total {self.log_lines}")
        head("router_feedback_total", "counter", "POST /v1/feedback by status (200 = on disk).")
        for status, n in sorted(self.feedback.items()):
            out.append(f'router_feedback_total{{status="{status}"}} {n}')
        head("router_ood_prompts_total", "counter",
             "Routed prompts beyond the router's training-distance quantile (predictions shrunk to priors).")
        out.append(f"router_ood_prompts_total {self.ood_flagged}")
        head("router_ood_checked_total", "counter", "Routed prompts checked by the out-of-distribution guard.")
        out.append(f"router_ood_checked_total {self.ood_checked}")
        head("router_ood_share", "gauge", "Share of checked prompts that were out of distribution (drift).")
        share = self.ood_flagged / self.ood_checked if self.ood_checked else 0.0
        out.append(f"router_ood_share {share:.6g}")
        head("router_online_updates_total", "counter", "Feedback applied to the online policy.")
        out.append(f"router_online_updates_total {self.online_updates}")
        head("router_online_explored_total", "counter", "Requests where the online policy explored.")
        out.append(f"router_online_explored_total {self.online_explored}")
        return "\n".join(out) + "\n"


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
