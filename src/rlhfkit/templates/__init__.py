"""`rlhfkit init`: project templates, each a working spec with data sized for `rlhfkit run`.

A template is a module here that writes the data files, beside a ``.toml`` spec of the same
name. The demo runs the support-replies template; library code never imports this package.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from rlhfkit.data import write_jsonl
from rlhfkit.data.io import atomic_dir
from rlhfkit.errors import UserError, display_path
from rlhfkit.project import SPEC_FILE, Project, parse_spec
from rlhfkit.templates import support_replies

TEMPLATES = {"support-replies": "Short, helpful customer-support email replies (the demo's task)."}


def init_project(target: Path | str, template: str = "support-replies") -> Project:
    """Create a working project from `template` in `target` (which must not exist or be empty).

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
    with atomic_dir(target) as tmp:
        spec_text = resources.files(__name__).joinpath("support_replies.toml").read_text()
        spec = parse_spec(spec_text)  # the template itself must always be valid
        (tmp / SPEC_FILE).write_text(spec_text)
        prompts, eval_prompts, ideal = support_replies.build()
        sft = support_replies.past_replies(ideal)
        write_jsonl(tmp / "data" / "prompts.jsonl", prompts)
        write_jsonl(tmp / "data" / "eval_prompts.jsonl", eval_prompts)
        write_jsonl(tmp / "data" / "sft.jsonl", sft)
        write_jsonl(tmp / "data" / "anchors.jsonl", support_replies.anchor_items(64, seed=1))
        (tmp / "README.md").write_text(_PROJECT_README.format(name=target.name))
    return Project(target, spec)


_PROJECT_README = """# {name}

An rlhfkit project. `rlhfkit.toml` is the spec: the task, the annotation rubric, the success
criteria written down before training, and each stage's settings.

- `data/prompts.jsonl`: customer emails the model answers (for annotation and RL).
- `data/sft.jsonl`: (email, ideal reply) pairs for supervised fine-tuning.
- `data/eval_prompts.jsonl`: held-out emails, used only to prove what changed.
- `data/anchors.jsonl`: pairs of replies with the team's answer (`label`), mixed into
  annotation to catch drift.
- `artifacts/`: everything rlhfkit makes from these (candidates, labels, models, reports),
  each with a manifest of what it was made from.

Check the spec and its files with `rlhfkit project check .`, then run every stage with
`rlhfkit run --project .`; it stops at annotation and says what to do.
"""
