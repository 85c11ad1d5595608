"""`rlhfkit init`: a working example project, the demo's (customer-support replies).

The example is the demo's task, so it lives with the demo; library code never imports it.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from rlhfkit.data import write_jsonl
from rlhfkit.data.io import atomic_dir
from rlhfkit.demo import support_replies
from rlhfkit.errors import UserError, display_path
from rlhfkit.project import SPEC_FILE, Project, parse_spec

EXAMPLES = {"support-replies": "Short, helpful customer-support email replies (the demo's task)."}


def init_project(target: Path | str, example: str = "support-replies") -> Project:
    """Create a working example project in `target` (which must not exist or be empty).

    The folder is assembled beside `target` and renamed into place, so an interrupted or
    failed init leaves nothing behind.
    """
    if example not in EXAMPLES:
        raise UserError(f"unknown example '{example}'; examples: {', '.join(EXAMPLES)}")
    target = Path(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UserError(f"{display_path(target)}: already exists and is not empty; nothing written")
    if target.exists():
        target.rmdir()  # empty (checked above); atomic_dir puts the finished folder here
    with atomic_dir(target) as tmp:
        spec_text = resources.files("rlhfkit.demo").joinpath("support_replies.toml").read_text()
        spec = parse_spec(spec_text)  # the template itself must always be valid
        (tmp / SPEC_FILE).write_text(spec_text)
        prompts, eval_prompts, ideal = support_replies.build()
        sft = support_replies.past_replies(ideal)
        write_jsonl(tmp / "data" / "prompts.jsonl", prompts)
        write_jsonl(tmp / "data" / "eval_prompts.jsonl", eval_prompts)
        write_jsonl(tmp / "data" / "sft.jsonl", sft)
        (tmp / "README.md").write_text(_PROJECT_README.format(name=target.name))
    return Project(target, spec)


_PROJECT_README = """# {name}

An rlhfkit project. `rlhfkit.toml` is the spec: the task, the annotation rubric, the success
criteria written down before training, and each stage's settings.

- `data/prompts.jsonl`: customer emails the model answers (for annotation and RL).
- `data/sft.jsonl`: (email, ideal reply) pairs for supervised fine-tuning.
- `data/eval_prompts.jsonl`: held-out emails, used only to prove what changed.
- `artifacts/`: everything rlhfkit makes from these (candidates, labels, models, reports),
  each with a manifest of what it was made from.

Check the data with `rlhfkit data validate data/sft.jsonl`, then sample candidate replies:
`rlhfkit generate --project . --limit 8`.
"""
