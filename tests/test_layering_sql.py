"""Every SQL statement is the store's: no other module runs one on a connection.

The agent's database is written in one place (agent/runtime/store/, called through the
hall's single writer), and hallctl's ingest file in hallctl/store.py. Anywhere else, a
module must neither import ``sqlite3`` nor call ``.execute(`` / ``.executemany(`` /
``.executescript(`` on anything but the hall (``Hall.execute`` runs a queue operation,
not SQL).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("agent", "drivers", "protocols", "hallctl")
# Where SQL may live: the agent's store package and hallctl's ingest stores (SQLite, PostgreSQL).
STORES = (
    ROOT / "agent" / "runtime" / "store",
    ROOT / "hallctl" / "store.py",
    ROOT / "hallctl" / "pgstore.py",
)
SQL_CALLS = {"execute", "executemany", "executescript"}


def _is_store(path: Path) -> bool:
    return any(path == store or store in path.parents for store in STORES)


def _receiver_is_hall(node: ast.expr, path: Path) -> bool:
    """``hall.execute``, ``self.hall.execute``, ``running.hall.execute``; ``self.execute``
    inside agent/runtime/hall.py (the Hall itself)."""
    if isinstance(node, ast.Name):
        if node.id == "hall":
            return True
        return node.id == "self" and path == ROOT / "agent" / "runtime" / "hall.py"
    return isinstance(node, ast.Attribute) and node.attr == "hall"


def sql_outside_the_store(source: str, path: Path) -> list[str]:
    """What in ``source`` runs SQL or opens SQLite (empty for a clean module)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [
                f"line {node.lineno}: import {a.name}" for a in node.names if a.name == "sqlite3"
            ]
        elif isinstance(node, ast.ImportFrom) and node.module == "sqlite3":
            found.append(f"line {node.lineno}: from sqlite3 import ...")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in SQL_CALLS
            and not _receiver_is_hall(node.func.value, path)
        ):
            found.append(f"line {node.lineno}: {ast.unparse(node.func)}(...)")
    return found


def _modules() -> list[Path]:
    return sorted(
        path
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if not _is_store(path)
    )


def test_no_module_outside_the_store_runs_sql() -> None:
    offenders = {
        str(path.relative_to(ROOT)): found
        for path in _modules()
        if (found := sql_outside_the_store(path.read_text(encoding="utf-8"), path))
    }
    assert offenders == {}, (
        "SQL outside the store; add a named method to agent/runtime/store/ (it returns a "
        f"typed result) and call that instead: {offenders}"
    )


def test_the_stores_are_where_the_check_expects_them() -> None:
    assert all(store.exists() for store in STORES)
    assert len(_modules()) > 50  # the scan sees the code, not an empty folder


@pytest.mark.parametrize(
    "source",
    [
        "import sqlite3\n",
        "from sqlite3 import connect\n",
        "def f(conn):\n    conn.execute('SELECT 1')\n",
        "def f(store):\n    store._conn.executemany('DELETE FROM events WHERE seq = ?', [])\n",
        "def f(self):\n    self.db.executescript('CREATE TABLE t (x)')\n",
        "def f(self):\n    self.execute('SELECT 1')\n",
    ],
)
def test_the_check_finds_sql(source: str) -> None:
    assert sql_outside_the_store(source, ROOT / "agent" / "features" / "example.py")


@pytest.mark.parametrize(
    "source",
    [
        "async def f(hall, op):\n    await hall.execute(op)\n",
        "async def f(self, op):\n    await self.hall.execute(op, record=None)\n",
        "async def f(self, c, n):\n    await self._execute(c, n)\n",
        "async def f(store):\n    return store.pending_documents()\n",
    ],
)
def test_the_check_lets_the_hall_and_the_store_methods_be(source: str) -> None:
    assert sql_outside_the_store(source, ROOT / "agent" / "features" / "example.py") == []
