"""Declare request and answer bodies in a FastAPI app's OpenAPI document, from pydantic types.

For routes that parse their bodies themselves (KServe's v1 routes, the monitor's webhooks: they
answer a malformed body with their own 400, or judge a batch item by item), FastAPI has no type
to publish; :func:`publish` adds the types' schemas to ``components/schemas`` and points each
operation's request body and 200 answer at them, once, when the document is first built.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel


class _App(Protocol):  # FastAPI, without importing it into the core
    openapi_schema: dict[str, Any] | None

    def openapi(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Bodies:
    """What one operation takes and answers (None: leave as FastAPI made it)."""

    request: type[BaseModel] | None = None
    answer: type[BaseModel] | None = None
    described: str = "The answer."


def publish(app: _App, operations: Mapping[tuple[str, str], Bodies]) -> None:
    """Declare ``operations`` ((method, path) -> bodies) in ``app``'s OpenAPI document."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def document() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        found = build()
        declare(found, operations)
        return found

    app.openapi = document  # type: ignore[method-assign]  # FastAPI's documented override


def declare(document: dict[str, Any], operations: Mapping[tuple[str, str], Bodies]) -> None:
    """Add the bodies of ``operations`` to an OpenAPI ``document``.

    Raises:
        KeyError: an operation the document does not have (a route renamed).
    """
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for (method, path), bodies in operations.items():
        operation = document["paths"][path][method]
        if bodies.request is not None:
            operation["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": _ref(schemas, bodies.request)}}}  # fmt: skip
        if bodies.answer is not None:
            operation.setdefault("responses", {})["200"] = {
                "description": bodies.described,
                "content": {"application/json": {"schema": _ref(schemas, bodies.answer)}},
            }


def _ref(schemas: dict[str, Any], model: type[BaseModel]) -> dict[str, str]:
    """``model``'s schema (and those it uses) in ``schemas``; a reference to it."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas |= schema.pop("$defs", {})
    schemas[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}
