"""Jinja2 for the HTML the project writes (report.html, the Benchmarks pages): autoescaped, an unknown name is an
error rather than an empty cell, and each column names its number format (a filter) where it is shown."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import jinja2


def formatted(spec: str, suffix: str = "", missing: str = "") -> Callable[[float | None], str]:
    """A filter showing a number with `spec` (and `suffix`), and `missing` for None."""

    def fmt(value: float | None) -> str:
        return missing if value is None else format(value, spec) + suffix

    return fmt


def environment(folder: Path, filters: Mapping[str, Callable]) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(filters)
    return env
