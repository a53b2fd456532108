"""The API schema's paths as the contract writes them: no trailing slash.

Every path is served with and without one (``re_path(r"^task-status/?$")``), and
drf-spectacular renders the optional slash as a trailing one; the contract, and a
client generated from the schema, use the bare form.
"""

from __future__ import annotations

from typing import Any


def contract_paths(result: dict[str, Any], generator: Any, **kwargs: Any) -> dict[str, Any]:
    result["paths"] = {
        (path.rstrip("/") or "/"): item for path, item in result.get("paths", {}).items()
    }
    return result
