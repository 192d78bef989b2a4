"""Schemathesis hooks for test_schemathesis.py: how to send a JSON Lines body (it has no built-in
serializer for application/x-ndjson), as raw text, so generated lines reach the API unchanged."""

from __future__ import annotations

from typing import Any

import schemathesis


@schemathesis.serializer("application/x-ndjson", "application/jsonl")
def jsonl(_ctx: Any, value: Any) -> dict[str, Any]:
    if isinstance(value, bytes):
        return {"data": value}
    return {"data": str(value).encode("utf-8", "surrogatepass")}
