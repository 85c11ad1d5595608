"""`rlhfkit init`: project templates, each a working spec with data sized for `rlhfkit run`.

A template is a module here whose `data()` returns the rows of each data file by its [data]
name, beside a ``.toml`` spec of the same name. The demo runs the support-replies template;
library code never imports this package.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import ModuleType

from rlhfkit import strict_json
from rlhfkit.data import write_jsonl
from rlhfkit.data.io import atomic_dir
from rlhfkit.errors import UserError, display_path
from rlhfkit.project import SPEC_FILE, Project, parse_spec
from rlhfkit.templates import decline_off_topic, memo_format, support_replies


@dataclass(frozen=True)
class Template:
    module: ModuleType
    """Its `data()` returns {[data] name: rows}; its spec is the .toml of the same name."""
    description: str

    @property
    def spec_text(self) -> str:
        name = self.module.__name__.rpartition(".")[2]
        return resources.files(__name__).joinpath(f"{name}.toml").read_text(encoding="utf-8")


TEMPLATES = {
    "support-replies": Template(
        support_replies, "Short, helpful customer-support email replies (the demo's task)."
    ),
    "memo-format": Template(
        memo_format, "Internal memos in the firm's format: header lines, a summary, brief."
    ),
    "decline-off-topic": Template(
        decline_off_topic, "A bike shop's help desk that declines requests outside its domain."
    ),
}


def init_project(
    target: Path | str, template: str = "support-replies", name: str | None = None
) -> Project:
    """Create a working project from `template` in `target` (which must not exist or be empty),
    named `name` in its spec (default: the template's name).

    The folder is assembled beside `target` and renamed into place, so an interrupted or
    failed init leaves nothing behind.
    """
    if template not in TEMPLATES:
        raise UserError(f"unknown template '{template}'; templates: {', '.join(TEMPLATES)}")
    target = Path(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UserError(f"{display_path(target)}: already exists and is not empty; nothing written")
    if target.exists():
        target.rmdir()  # empty (checked above); atomic_dir puts the finished folder here
    chosen = TEMPLATES[template]
    with atomic_dir(target) as tmp:
        text = chosen.spec_text
        if name is not None:
            line = f"name = {strict_json.dumps(name)}"  # a JSON string is a TOML basic string
            text = re.sub(r'^name = ".*"$', lambda _: line, text, count=1, flags=re.M)
        spec = parse_spec(text)  # the template itself must always be valid
        (tmp / SPEC_FILE).write_text(text, encoding="utf-8")
        paths = spec.data.model_dump()
        for name, rows in chosen.module.data().items():
            write_jsonl(tmp / paths[name], rows)
        readme = _PROJECT_README.format(name=target.name, description=chosen.description)
        (tmp / "README.md").write_text(readme, encoding="utf-8")
    return Project(target, spec)


_PROJECT_README = """# {name}

An rlhfkit project: {description} `rlhfkit.toml` is the spec: the task, the annotation
rubric, the success criteria written down before training, and each stage's settings.

- `data/prompts.jsonl`: requests the model answers (for annotation and RL).
- `data/sft.jsonl`: (request, reply) pairs for supervised fine-tuning.
- `data/eval_prompts.jsonl`: held-out requests, used only to prove what changed.
- `data/anchors.jsonl`: pairs of replies with the team's answer (`label`), mixed into
  annotation to catch drift.
- `run/`: everything `rlhfkit run` makes from these (models, candidates, the exported
  preferences, evaluations, the report), each with a manifest of what it was made from;
  `run/stages.json` records each stage's settings.
- `artifacts/`: the annotation store people label in, and what the single commands write
  (`rlhfkit generate`, the frozen success criteria).

Check the spec and its files with `rlhfkit project check .`; see what the evaluation can
detect of each success criterion, and what each stage costs on this machine, with
`rlhfkit plan --project .` (before training, while the criteria can still change); then run
every stage with `rlhfkit run --project .`; it stops at annotation and says what to do.
"""
