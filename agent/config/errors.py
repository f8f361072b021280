"""Problems with the configuration, and the validation error that carries its fix.

A :class:`ConfigProblem` says where, what and how to fix it; :class:`ConfigError` carries
every problem found. The lowest room of the package: it imports none of the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic_core import PydanticCustomError

from agent.errors import HallAgentError


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with the configuration: where, what, and how to fix it."""

    path: str
    message: str
    hint: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message} (fix: {self.hint})"


def format_problems(problems: Sequence[ConfigProblem]) -> str:
    """One line per problem: ``PATH: MESSAGE (fix: HINT)``."""
    return "\n".join(str(p) for p in problems)


class ConfigError(HallAgentError):
    """The configuration cannot be used; ``problems`` says everything that is wrong."""

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__(format_problems(self.problems))


class CrossCheckError(HallAgentError, ValueError):
    """Raised inside validation when fields disagree with each other (carries the paths)."""

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__(format_problems(self.problems))


def _invalid(message: str, hint: str, at: str | None = None) -> PydanticCustomError:
    """A validation error carrying its fix; ``at`` names a sub-field of the validated model."""
    context: dict[str, str] = {"hint": hint}
    if at is not None:
        context["at"] = at
    return PydanticCustomError("invalid", message, context)
