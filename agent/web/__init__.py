"""The local API: FastAPI routes, pages, health, access rules.

FastAPI is imported here first, with two start-up costs taken out:

- pydantic is told to defer building the models FastAPI declares while it is imported
  (``defer_build``): the ~100 models of the OpenAPI document (``fastapi.openapi.models``)
  are otherwise built at every start, and are needed only when ``/openapi.json`` or
  ``/docs`` is asked for; each model is then built on its first use. Only the models
  FastAPI declares while it is being imported are deferred; the agent's own are not.
- FastAPI asks of every parameter and response type of every route whether it is a
  pydantic v1 model, and imports ``pydantic.v1`` (a second copy of pydantic, ~50 ms and
  ~3 MB here) to answer. A class can be a v1 model only once ``pydantic.v1`` has been
  imported, so while nothing has imported it the answer is "no" without importing it;
  once something has, FastAPI's own check answers (see :func:`_skip_pydantic_v1`).

uvicorn is entered without its command line: ``import uvicorn`` (or any ``uvicorn.x``) runs
the package's ``__init__``, which imports ``uvicorn.main`` and with it click, the
reloaders and multiprocessing (~1 MB of memory for the life of the process), none of which
the agent uses: it runs ``uvicorn.Server`` in its own loop (agent/web/app.py). See
:func:`_uvicorn_without_its_command_line`.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from typing import Any


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


def _unless_v1_is_loaded(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    def is_v1(obj: Any) -> bool:
        return "pydantic.v1" in sys.modules and check(obj)

    is_v1.__wrapped__ = check  # type: ignore[attr-defined]
    return is_v1


def _skip_pydantic_v1() -> None:
    """Answer FastAPI's "is this a pydantic v1 model?" without importing pydantic.v1.

    Exact, not a guess: ``isinstance``/``issubclass`` against ``pydantic.v1.BaseModel``
    can only be true when that module is loaded. The checks are looked up where FastAPI
    calls them (``fastapi._compat.shared`` for routes, ``fastapi.encoders`` for
    responses); a FastAPI without them is left as it is.
    """
    from fastapi import encoders
    from fastapi._compat import shared

    for module, name in (
        (shared, "is_pydantic_v1_model_class"),
        (shared, "is_pydantic_v1_model_instance"),
        (encoders, "is_pydantic_v1_model_instance"),
    ):
        check = getattr(module, name, None)
        if callable(check) and not hasattr(check, "__wrapped__"):
            setattr(module, name, _unless_v1_is_loaded(check))


# What uvicorn's __init__ offers, and where each comes from (uvicorn 0.30 to 0.55 at least).
_UVICORN_NAMES = {
    "Config": "uvicorn.config",
    "Server": "uvicorn.server",
    "main": "uvicorn.main",
    "run": "uvicorn.main",
    "__version__": "uvicorn._version",
}


def _uvicorn_without_its_command_line() -> None:
    """Put uvicorn's package in ``sys.modules`` without running its ``__init__``.

    The package module is made from its own spec (so ``uvicorn.config``, ``uvicorn.server``
    and the protocols import as usual from its directory), and its public names
    (``Config``, ``Server``, ``main``, ``run``, ``__version__``) are looked up on first use
    (a module ``__getattr__``): ``uvicorn.run`` still works, and imports ``uvicorn.main``
    (click) only then. Already imported, or not found: left as it is.
    """
    if "uvicorn" in sys.modules:
        return
    spec = importlib.util.find_spec("uvicorn")
    if spec is None or spec.submodule_search_locations is None:
        return
    package = importlib.util.module_from_spec(spec)

    def public_name(name: str) -> Any:
        where = _UVICORN_NAMES.get(name)
        if where is None:
            raise AttributeError(f"module 'uvicorn' has no attribute {name!r}")
        value = getattr(importlib.import_module(where), name)
        setattr(package, name, value)
        return value

    package.__dict__["__getattr__"] = public_name
    package.__dict__["__all__"] = ["main", "run", "Config", "Server"]
    sys.modules["uvicorn"] = package


_import_fastapi_deferring_its_models()
_skip_pydantic_v1()
_uvicorn_without_its_command_line()
