"""Render the report as one self-contained HTML file, and write it with its Markdown summary.

The page has no scripts, loads no fonts and fetches nothing: styles are inline, figures are
PNG data URIs, and a Content-Security-Policy forbids anything else, so it opens offline and
a reply that contains ``<script>`` can only ever show as text (Jinja2 escapes every value).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from rlhfkit.data.io import atomic_open
from rlhfkit.report import sections
from rlhfkit.report.inputs import RunInputs
from rlhfkit.report.markdown import render_markdown


def render_html(context: dict[str, Any]) -> str:
    from jinja2 import Environment, StrictUndefined

    env = Environment(
        autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True
    )
    text = resources.files("rlhfkit.report").joinpath("report.html.j2").read_text("utf-8")
    c = context
    return env.from_string(text).render(
        oc=c["outcome"],
        o=c["overview"],
        t=c["task"],
        a=c["annotation"],
        r=c["rm"],
        tr=c["training"],
        evals=c["evals"],
        samples=c["samples"],
        sources=c["sources"],
        doctor=c["doctor"],
    )


@dataclass(frozen=True)
class Written:
    html: Path
    markdown: Path
    sections_run: list[str]
    sections_missing: list[str]


def write_report(inputs: RunInputs, out: Path, samples: int = 12) -> Written:
    """Write `out` (HTML) and the Markdown summary beside it (same name, ``.md``), each
    atomically: a failure leaves any earlier report as it was."""
    context = sections.build(inputs, samples)
    page = render_html(context)
    md_path = out.with_suffix(".md")
    summary = render_markdown(context, html_name=out.name)
    with atomic_open(out) as f:
        f.write(page)
    with atomic_open(md_path) as f:
        f.write(summary)
    names = {
        "task and rubric": context["task"]["ran"],
        "annotation quality": context["annotation"]["ran"],
        "reward model": context["rm"]["ran"],
        "training": context["training"]["ran"],
        "success criteria": bool(context["evals"]),
        "samples": bool(context["samples"]),
    }
    return Written(
        out,
        md_path,
        [k for k, ran in names.items() if ran],
        [k for k, ran in names.items() if not ran],
    )
