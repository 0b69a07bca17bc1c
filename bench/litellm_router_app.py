"""The peer of the serving benchmark: LiteLLM's ``Router`` behind a minimal ASGI endpoint.

``python bench/litellm_router_app.py --port 8100 --provider-url http://127.0.0.1:9000 --models a,b,c``
serves ``POST /v1/chat/completions`` (and ``GET /healthz``) with uvicorn. The model group ``router`` holds
one deployment per model (LiteLLM picks among them with its default ``simple-shuffle`` strategy) and
every model is also reachable by its own name; each deployment is ``openai/<model>`` at the provider's
``/v1``. This is the "few lines" of glue a LiteLLM user writes, so the benchmark charges LiteLLM for its
own work and nothing else.
"""

from __future__ import annotations

import argparse
import logging
import os


def model_list(provider_url: str, models: list[str], group: str = "router") -> list[dict]:
    """LiteLLM deployments: the ``group`` over every model, plus each model under its own name."""
    def deployment(name: str, model: str) -> dict:
        return {
            "model_name": name,
            "litellm_params": {"model": f"openai/{model}", "api_base": provider_url.rstrip("/") + "/v1",
                               "api_key": "sk-local-provider"},
        }

    return [deployment(group, m) for m in models] + [deployment(m, m) for m in models]


def build_app(provider_url: str, models: list[str]):
    """The Starlette app: one ``litellm.Router`` built in the lifespan, one endpoint calling it."""
    import contextlib

    import litellm
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    state: dict = {}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        litellm.suppress_debug_info = True
        state["router"] = litellm.Router(model_list=model_list(provider_url, models), num_retries=0)
        yield

    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        try:
            response = await state["router"].acompletion(
                model=body["model"], messages=body["messages"], max_tokens=body.get("max_tokens")
            )
        except Exception as exc:  # the peer's error, passed on as the status LiteLLM gives it
            return JSONResponse({"error": {"message": str(exc)}}, status_code=getattr(exc, "status_code", 500))
        return JSONResponse(response.model_dump())

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[Route("/v1/chat/completions", chat, methods=["POST"]), Route("/healthz", healthz)],
        lifespan=lifespan,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8100)
    ap.add_argument("--provider-url", default="http://127.0.0.1:9000")
    ap.add_argument("--models", required=True, help="comma-separated model names served by the provider")
    args = ap.parse_args()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    logging.getLogger("LiteLLM").setLevel(logging.WARNING)
    import uvicorn

    app = build_app(args.provider_url, [m for m in args.models.split(",") if m])
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
