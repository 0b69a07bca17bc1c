"""The local provider: a stand-in for LLM providers that speaks their real wire protocols over HTTP.

``python -m serve.provider --port 9000 [--data demo|routerbench|PATH] [--latency-ms N] [--fault M=KIND]``
serves OpenAI chat completions, Anthropic messages, Gemini generateContent and Ollama chat, streaming and
not, with deterministic answers of the logged length, per-model latencies and injectable faults.

Rooms: ``answers`` (what is said and how long it takes), ``faults`` (the fault table), ``wire`` (the four
protocols' bodies and frames), ``server`` (the HTTP/1.1 server and routes), ``run`` (command line and
:func:`running`).

Example:
    >>> from serve.provider import running
    >>> with running(latency_ms=0) as url:
    ...     url.startswith("http://127.0.0.1:")
    True
"""

from serve.provider.answers import AnswerBook
from serve.provider.faults import KINDS, Fault, FaultTable, parse_fault
from serve.provider.run import ProviderHandle, build_book, main, running
from serve.provider.server import ProviderServer

__all__ = ["KINDS", "AnswerBook", "Fault", "FaultTable", "ProviderHandle", "ProviderServer", "build_book",
           "main", "parse_fault", "running"]
