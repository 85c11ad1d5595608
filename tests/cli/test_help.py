"""Every command's `--help` at 80 columns: as wide as the terminal at most, every bracketed
word of its docstring and option texts kept, and option texts not squeezed into a narrow column
(rich's panels left "Model folder, hub / id in the local / cache, or bundled" at 80 columns)."""

import re

import pytest
import typer
from typer.core import TyperGroup

from rlhfkit.cli import app
from tests.conftest import run_cli

# Words on a full line of an option's help, on average over a command's options; a single
# option may fall lower where its text holds long words (a path, a URL).
MIN_WORDS_PER_LINE = 5
MIN_WORDS_PER_LINE_ONE = 4


def _commands(command, path=()):
    yield path, command
    if isinstance(command, TyperGroup):
        for name, sub in command.commands.items():
            yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(typer.main.get_command(app)))


def _entries(text: str) -> dict[str, list[str]]:
    """The help of each option, argument or command listed: term -> its lines of help."""
    entries: dict[str, list[str]] = {}
    in_section = False
    lines: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            in_section = False
        elif re.match(r"\S.*:$", line) and not line.startswith("Usage:"):
            in_section = True  # "Options:", "Commands:", "2. Data and models:"
        elif in_section and re.match(r"  \S", line):
            term, _, first = line.strip().partition("  ")
            lines = entries.setdefault(term, [])
            if first.strip():
                lines.append(first.strip())
        elif in_section:
            lines.append(line.strip())
    return entries


def _words_per_line(texts: list[list[str]]) -> float:
    """Mean words on the lines of wrapped texts, less each one's last (ragged) line."""
    full = [line for lines in texts for line in lines[:-1]]
    return sum(len(line.split()) for line in full) / len(full)


@pytest.fixture
def help_at_80(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")

    def show(path: tuple[str, ...]) -> str:
        result = run_cli(*path, "--help")
        assert result.code == 0, result.stderr
        return result.stdout

    return show


@pytest.mark.parametrize(
    ("path", "command"), COMMANDS, ids=[" ".join(p) or "rlhfkit" for p, _ in COMMANDS]
)
def test_help_at_80_columns_keeps_every_word_and_reads_well(help_at_80, path, command):
    text = help_at_80(path)
    too_wide = [line for line in text.splitlines() if len(line) > 80]
    assert not too_wide, too_wide
    assert "\\[" not in text  # no markup escape shows
    flat = " ".join(text.split())
    helps = [command.help or ""] + [p.help or "" for p in command.params if hasattr(p, "help")]
    for bracketed in re.findall(r"\[[^\]]+\]", "\n".join(helps)):
        assert " ".join(bracketed.split()) in flat, f"{bracketed} lost from {path} --help"
    entries = _entries(text)
    assert entries, f"no option list in {text}"  # every command has -h, --help
    wrapped = {term: lines for term, lines in entries.items() if len(lines) > 1}
    if wrapped:
        assert _words_per_line(list(wrapped.values())) >= MIN_WORDS_PER_LINE, wrapped
    for term, lines in wrapped.items():
        assert _words_per_line([lines]) >= MIN_WORDS_PER_LINE_ONE, (term, lines)


def test_entries_parse_the_layout():
    text = "Usage: x\n\n  Doc line:\n\nOptions:\n  --a <int>  one two\n             three\n  --b\n"
    assert _entries(text) == {"--a <int>": ["one two", "three"], "--b": []}


def test_root_help_lists_the_commands_under_the_pipeline_headings(help_at_80):
    text = help_at_80(())
    assert "1. Design the project:\n  init " in text and "4. Train:\n  train " in text
    assert "rlhfkit init my-project" in " ".join(text.split())  # not cut at its hyphen
