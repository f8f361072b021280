"""The local API: FastAPI routes, pages, health, access rules.

FastAPI is imported here first, with pydantic told to defer building the models it
declares (``defer_build``): the ~100 models of the OpenAPI document (``fastapi.openapi.
models``) are otherwise built at every start, and are needed only when ``/openapi.json``
or ``/docs`` is asked for; each model is then built on its first use. Only the models
FastAPI declares while it is being imported are deferred; the agent's own are not.
"""

from __future__ import annotations

import sys


def _import_fastapi_deferring_its_models() -> None:
    if "fastapi" in sys.modules:
        return
    from pydantic import BaseModel

    config = BaseModel.model_config
    before = config.get("defer_build")
    config["defer_build"] = True
    try:
        import fastapi
        import fastapi.openapi.models
        import fastapi.security  # noqa: F401
    finally:
        if before is None:
            config.pop("defer_build", None)
        else:
            config["defer_build"] = before


_import_fastapi_deferring_its_models()
