"""The HTTP API: OpenAI-compatible chat completions and models, health, readiness and metrics."""
