"""OpenAPI description of the Bearer-token authentication (drf-spectacular extension)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class BearerTokenScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "webui.api.auth.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer",
                "description": "a token from `postern token create USER`"}


ERROR_SCHEMA = {"type": "object", "additionalProperties": True,
                "description": "field name (or detail / non_field_errors) -> messages"}
_ERRORS = {
    "400": "invalid input; nothing saved",
    "401": "no or bad Bearer token",
    "403": "the token may not do this (read-only, or not a superadmin)",
    "404": "not found (or not one of your domains)",
    "405": "method not allowed (export/ and import/ are actions, never keys)",
}


def add_error_responses(result: dict[str, Any], generator: Any, request: Any,
                        public: bool) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: document the error answers every operation can
    give (the contract test holds the API to them)."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    ref = {"$ref": "#/components/schemas/Error"}
    for path, item in result.get("paths", {}).items():
        for method, op in item.items():
            responses = op.setdefault("responses", {})
            for code, text in _ERRORS.items():
                responses.setdefault(code, {"description": text,
                                            "content": {"application/json": {"schema": ref}}})
            if method == "post":
                responses.setdefault("409", {"description": "already exists; PUT replaces",
                                             "content": {"application/json": {"schema": ref}}})
    return result
