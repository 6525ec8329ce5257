"""The typed model of a mesh policy, built from the syntax tree."""

from .types import *  # noqa: F401,F403
