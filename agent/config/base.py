"""What every config model shares: the :class:`Model` base and the text patterns of ids,
prefixes and key names (agent/config/messages.py says in words what each one means).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

IDENTIFIER_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"
HALL_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{1,62}$"
PREFIX_PATTERN = r"^[A-Z]{1,2}$"
KEY_NAME_PATTERN = r"^(KEY|BTN)_[A-Z0-9_]+$"
ENV_NAME_PATTERN = r"^[A-Z_][A-Z0-9_]*$"
REGION_CODE_PATTERN = r"^[0-9]{6}([0-9]{6})?$"
LANGUAGE_PATTERN = r"^[a-z]{2,3}(-[A-Za-z0-9]{1,8})*$"

Identifier = Annotated[str, Field(pattern=IDENTIFIER_PATTERN)]
KeyName = Annotated[str, Field(pattern=KEY_NAME_PATTERN)]


class Model(BaseModel):
    """Base for every config model: unknown keys are errors (they are usually typos)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
