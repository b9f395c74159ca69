"""The `rwkvchat chat` command (placeholder; filled in by its issue)."""

from __future__ import annotations
