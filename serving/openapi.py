"""The predictor's OpenAPI document declares the v1 protocol's bodies.

KServe's v1 routes take a raw request and answer an untyped dict, so its ``/openapi.json`` says
nothing of what ``:predict`` and ``:explain`` take and give. The types of :mod:`dermaops.v1`,
which build the answers, are published there: a client generated from the document, or a
fuzzer reading it, sees the real contract.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from dermaops.v1 import openapi_schemas

ANSWERS = {":predict": "PredictAnswer", ":explain": "ExplainAnswer"}


def publish_v1(app: FastAPI) -> None:
    """Declare the v1 request and answers in ``app``'s OpenAPI document (built once, on the
    first ``/openapi.json``, after every route is registered)."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def document() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        found = build()
        declare_v1(found)
        return found

    app.openapi = document  # type: ignore[method-assign]  # FastAPI's documented override


def declare_v1(document: dict[str, Any]) -> None:
    """Add the request body and the 200 answer to every v1 ``:predict``/``:explain`` path."""
    document.setdefault("components", {}).setdefault("schemas", {}).update(openapi_schemas())
    for path, operations in document.get("paths", {}).items():
        answer = next((a for suffix, a in ANSWERS.items() if path.endswith(suffix)), None)
        if answer is None or "post" not in operations:
            continue
        post = operations["post"]
        post["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/PredictRequest"}}}}  # fmt: skip
        post.setdefault("responses", {})["200"] = {
            "description": f"One {answer.removesuffix('Answer').lower()} per instance, in order.",
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{answer}"}}},
        }
