"""The peer of bench/serve.py: a text classifier served the way a user would first write it.

A FastAPI app whose ``POST /classify`` takes ``{"texts": "..." | [...]}`` and calls a
``transformers.pipeline("text-classification")`` on it, per request, in a plain ``def`` endpoint (so
FastAPI runs it on its thread pool), under uvicorn with one worker. Nothing is batched across requests,
nothing is logged. ``GET /readyz`` answers 200 once the model is loaded, like BentoML's.

Run:  python bench/peer_server.py --model DIR [--host 127.0.0.1] [--port 3100]
"""

from __future__ import annotations

import argparse
from typing import Any

from pydantic import BaseModel


class ClassifyRequest(BaseModel):
    """One text or a list of texts (the body bench/serve.py sends to both servers)."""

    texts: str | list[str]


def build_app(model_dir: str) -> Any:
    """The FastAPI app serving the model in ``model_dir`` (a ``save_pretrained`` folder)."""
    from fastapi import FastAPI
    from transformers import pipeline

    classifier = pipeline("text-classification", model=model_dir)
    app = FastAPI()

    @app.post("/classify")
    def classify(request: ClassifyRequest) -> list[dict[str, Any]]:
        texts = [request.texts] if isinstance(request.texts, str) else request.texts
        return list(classifier(texts))

    @app.get("/readyz")
    def readyz() -> dict[str, str]:
        return {"status": "ready"}

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a save_pretrained model folder")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3100)
    args = parser.parse_args(argv)

    import uvicorn

    uvicorn.run(build_app(args.model), host=args.host, port=args.port, workers=1, log_level="warning")


if __name__ == "__main__":
    main()
