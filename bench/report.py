"""What a benchmark reports: figures with their same-run baselines, and how they are printed.

Absolute numbers on a shared 2-core machine move from run to run, so every figure is paired
with a baseline measured in the same run, and the ratio between them is what to compare
across runs and against targets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Target:
    """A goal for a figure: its ratio (or its own value) compared with a bound."""

    on: Literal["ratio", "value"]
    op: Literal[">=", "<="]
    bound: float
    unit: str = ""

    def met(self, value: float | None, ratio: float | None) -> bool | None:
        """Whether the goal is met; None when the figure could not be measured."""
        measured = ratio if self.on == "ratio" else value
        if measured is None or math.isnan(measured):
            return None
        return measured >= self.bound if self.op == ">=" else measured <= self.bound

    def __str__(self) -> str:
        symbol = "≥" if self.op == ">=" else "≤"
        if self.on == "ratio":
            return f"ratio {symbol} {self.bound:g}"
        return f"{symbol} {format_value(self.bound, self.unit)}"


@dataclass(frozen=True)
class Figure:
    """One measured number, with the baseline it is compared to (measured in the same run)."""

    name: str
    value: float | None
    unit: str
    baseline_name: str = ""
    baseline: float | None = None
    target: Target | None = None
    note: str = ""
    #: Unit of the baseline when it differs from the figure's (e.g. bytes vs bytes/event).
    baseline_unit: str | None = None

    @property
    def ratio(self) -> float | None:
        """value / baseline, or None when either is missing (or the baseline is zero)."""
        if self.value is None or self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline

    @property
    def met(self) -> bool | None:
        """Whether the target is met (None: no target, or not measured)."""
        return self.target.met(self.value, self.ratio) if self.target else None


@dataclass
class Section:
    """The outcome of one benchmark: figures, free-form tables and notes."""

    title: str
    figures: list[Figure] = field(default_factory=list)
    tables: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, figure: Figure) -> Figure:
        """Append a figure and return it (handy for printing it as it is measured)."""
        self.figures.append(figure)
        print(f"  {render_figure_line(figure)}", flush=True)
        return figure

    def note(self, text: str) -> None:
        """Append a note (and show it at once: a long run should not be silent)."""
        self.notes.append(text)
        print(f"  note: {text}", flush=True)

    def table(self, caption: str, headers: list[str], rows: list[list[str]]) -> None:
        """Append a free-form table (e.g. the profile's top functions)."""
        self.tables.append((caption, headers, rows))


def format_value(value: float | None, unit: str) -> str:
    """A number with a sensible precision for its unit ("—" when it was not measured)."""
    if value is None or math.isnan(value):
        return "—"
    if unit == "ms":
        return f"{value:,.2f} ms" if value < 10 else f"{value:,.1f} ms"
    if unit == "s":
        return f"{value:,.2f} s"
    if unit == "B":
        return f"{value:,.0f} B"
    if unit == "MiB":
        return f"{value:,.1f} MiB"
    if unit in {"req/s", "tps", "events/s", "/s"}:
        return f"{value:,.0f} {unit}"
    if unit == "":
        return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.3g}"
    return f"{value:,.1f} {unit}"


def _format_ratio(ratio: float | None) -> str:
    return "—" if ratio is None else f"{ratio:.2f}"


def _format_met(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "—"}[met]


def render_figure_line(figure: Figure) -> str:
    """One line for the console while the run is going."""
    line = f"{figure.name}: {format_value(figure.value, figure.unit)}"
    if figure.baseline_name:
        unit = figure.unit if figure.baseline_unit is None else figure.baseline_unit
        line += (
            f" | {figure.baseline_name}: {format_value(figure.baseline, unit)}"
            f" | ratio {_format_ratio(figure.ratio)}"
        )
    if figure.target:
        line += f" | target {figure.target}: {_format_met(figure.met)}"
    return line


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table."""

    def row(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([row(headers), row(["---"] * len(headers)), *(row(r) for r in rows)])


def render_section(section: Section) -> str:
    """A section as markdown: the figures table, then extra tables, then notes."""
    parts = [f"### {section.title}"]
    if section.figures:
        rows = []
        for f in section.figures:
            unit = f.unit if f.baseline_unit is None else f.baseline_unit
            rows.append(
                [
                    f.name,
                    format_value(f.value, f.unit),
                    f.baseline_name or "—",
                    format_value(f.baseline, unit) if f.baseline_name else "—",
                    _format_ratio(f.ratio),
                    str(f.target) if f.target else "—",
                    _format_met(f.met),
                ]
            )
        parts.append(
            markdown_table(
                ["figure", "value", "same-run baseline", "baseline", "ratio", "target", "met"],
                rows,
            )
        )
        # A note shared by several figures (e.g. one per worker count) is shown once.
        seen: dict[str, list[str]] = {}
        for f in section.figures:
            if f.note:
                seen.setdefault(f.note, []).append(f.name)
        extra = [f"- {'; '.join(names)}: {note}" for note, names in seen.items()]
        if extra:
            parts.append("\n".join(extra))
    for caption, headers, rows in section.tables:
        parts.append(f"{caption}\n\n{markdown_table(headers, rows)}")
    if section.notes:
        parts.append("\n".join(f"- {note}" for note in section.notes))
    return "\n\n".join(parts)
