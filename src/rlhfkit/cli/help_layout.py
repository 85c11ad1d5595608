"""How `--help` is laid out: click's plain layout, for every command.

Rich's layout (Typer's default) took a docstring's "[monitors]" for a style tag and dropped it,
and at 80 columns its option panels squeezed each help text to a few words per line. Click's
layout prints text as written and gives option help the width that the option names leave.
"""

from __future__ import annotations

from collections.abc import Sequence

import typer
from typer.core import TyperCommand, TyperGroup

# U+2011, a hyphen no line is broken at: click's wrapper would break `my-project` and
# `--max-length` at their hyphens, and a flag or a path split over two lines cannot be copied.
_NO_BREAK = "\u2011"


class _Formatter(typer.Context.formatter_class):  # Typer's copy of click's HelpFormatter
    """Click's formatter, wrapping at spaces only."""

    def write_text(self, text: str) -> None:
        super().write_text(text.replace("-", _NO_BREAK))

    def write_dl(
        self, rows: Sequence[tuple[str, str]], col_max: int = 30, col_spacing: int = 2
    ) -> None:
        rows = [(term, text.replace("-", _NO_BREAK)) for term, text in rows]
        super().write_dl(rows, col_max, col_spacing)

    def getvalue(self) -> str:
        return super().getvalue().replace(_NO_BREAK, "-")


class _Context(typer.Context):
    formatter_class = _Formatter


class Group(TyperGroup):
    """A command group with click's plain help for itself and its commands. Its commands are
    listed under their headings (`rich_help_panel`), each with its first sentence whole."""

    context_class = _Context

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for command in self.commands.values():  # sub-groups are built first, with their own
            command.context_class = _Context

    def format_commands(self, ctx: typer.Context, formatter: _Formatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {}
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is None or cmd.hidden:
                continue
            panel = cmd.rich_help_panel if isinstance(cmd, TyperCommand | TyperGroup) else None
            sections.setdefault(panel or "Commands", []).append(
                (name, cmd.get_short_help_str(limit=300))
            )
        # one column for the names of every section, so that the texts line up
        width = max((len(name) for rows in sections.values() for name, _ in rows), default=0)
        for heading, rows in sections.items():
            with formatter.section(heading):
                formatter.write_dl([(name.ljust(width), text) for name, text in rows])
