"""The method registry: ``@METHODS.register(name, "one line (paper)")`` on a method class."""

from __future__ import annotations

from transferkit.registry import Registry

METHODS: Registry = Registry("method")
