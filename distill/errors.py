"""ConfigError, at the bottom of the package's layers: a config value that does not fit is found where
it is used (a mix name in distill.thoughts, a teacher name in distill.teachers, a shard spec), and those
modules raise it without importing distill.config, which reads their registries. distill.config
re-exports it, so ``from distill.config import ConfigError`` names the same class."""
from __future__ import annotations


class ConfigError(ValueError):
    """A preset or override that does not fit the schema; the message names the key."""
