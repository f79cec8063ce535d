"""The Faust application, its agents, the runtime around them and the `pulse` command line."""

from __future__ import annotations

__all__: list[str] = []
