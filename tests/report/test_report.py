"""`rlhfkit report`: rendered from hand-made run files, checked as text and in a real browser.

The run folder is tests/report/files/run (hand-made eval, reward-model, training and status
files) plus, made at test time, the bundled project spec and an agreement summary that the
real `rlhfkit.agreement.summarise` computes on labels from the simulated panel.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from importlib import resources
from pathlib import Path

import pytest

from rlhfkit.errors import UserError
from rlhfkit.report.html import write_report
from rlhfkit.report.inputs import load_run
from tests.conftest import run_cli

FILES = Path(__file__).parent / "files" / "run"
XSS = "<script>window.__xss = 1; console.error('xss')</script>"


def _agreement_summary() -> dict:
    from rlhfkit.agreement import Labels, summarise
    from rlhfkit.demo.panel import default_panel
    from rlhfkit.templates import support_replies

    rng = random.Random(0)
    _, _, sft = support_replies.build()
    records = []
    for ann in default_panel(5, drift_after=40):
        for i, row in enumerate(sft[:60]):
            ideal = row["completion"][0]["content"]
            echo = "Sorry about that.\n\nBest regards,\nThe Northwind Support Team"
            swap = rng.random() < 0.5
            choice = ann.label(row["prompt"], *((echo, ideal) if swap else (ideal, echo)))
            label = {"first": "B" if swap else "A", "second": "A" if swap else "B"}[choice]
            records.append((f"item{i}", ann.name, label, "B" if swap else "A"))
    labels = Labels.from_records(*zip(*records, strict=True))
    gold = {i: labels.code_of("A") for i in range(0, len(labels.items), 4)}
    return summarise(labels, gold=gold, anchor_window=5, replicates=100)


def _make_run(root: Path, agreement: str) -> Path:
    run = root / "run"
    shutil.copytree(FILES, run)
    spec = resources.files("rlhfkit.templates").joinpath("support_replies.toml").read_text()
    (run / "project").mkdir()
    (run / "project" / "rlhfkit.toml").write_text(spec)
    (run / "annotation" / "agreement.json").write_text(agreement)
    return run


@pytest.fixture(scope="module")
def agreement_json() -> str:
    return json.dumps(_agreement_summary())


@pytest.fixture
def run_dir(tmp_path: Path, agreement_json: str) -> Path:
    return _make_run(tmp_path, agreement_json)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, agreement_json) -> tuple[Path, str, str, str]:
    """The full run folder rendered once, end to end through the CLI: (run folder, page,
    summary, the CLI's output)."""
    run = _make_run(tmp_path_factory.mktemp("rendered"), agreement_json)
    r = run_cli("report", str(run))
    assert r.code == 0, r.stderr
    html, md = run / "report.html", run / "report.md"
    return run, html.read_text(), md.read_text(), r.stdout


def _render(run: Path, **kw) -> tuple[str, str]:
    written = write_report(load_run(run, **kw), run / "report.html")
    return written.html.read_text(), written.markdown.read_text()


def _row(page: str, first_cell: str, nth: int | None = None) -> str:
    """The table row whose first cell is `first_cell` (the only one, or the `nth`)."""
    rows = [r for r in page.split("<tr>") if r.startswith(f"<td>{first_cell}</td>")]
    assert nth is not None or len(rows) == 1, first_cell
    return rows[nth or 0].split("</tr>")[0]


# --- content ----------------------------------------------------------------------------------


def test_every_section_renders_from_the_run_files(rendered):
    run, page, md, stdout = rendered
    assert f"report: {run / 'report.html'}" in stdout and "report.md" in stdout
    assert "Not run" not in page
    # task and rubric, with version and the success criteria
    assert "rubric version <strong>1</strong>" in page and "signs_off" in page
    # annotation: the gate with its admin override, the drifting annotator flagged
    assert "failed, overridden by an admin" in page
    assert "recalibrate after 200 labels" in page
    assert "flagged, left out of the export" in _row(page, "sim-drifter", nth=1)
    assert "flagged" not in _row(page, "sim-careful", nth=1)
    assert "anchor accuracy 0.45 is below the threshold 0.70" in page  # the store's alert
    assert "Simulated annotators." in page
    assert "noise → 50% after 60 labels" in _row(page, "sim-drifter", nth=0)  # as configured
    # reward model, training curves, criteria with p-values and verdicts, win rates, flags
    assert "81.2%" in page and "ECE" in page
    assert "KL coefficient" in page
    assert "improved" in page and "regressed" in page and "&lt; 0.001" in page
    assert "panel (simulated)" in page and "66.0%" in page
    assert "FLAGGED" in page and "above the 5% threshold" in page
    # every figure is embedded: anchor drift, reliability, 2 training runs, 2 before/after
    assert page.count('src="data:image/png;base64,') == 6
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)
    assert "<script" not in page.lower()
    # the summary beside it carries the headline numbers
    assert "| signs_off | increase | 12% | 71% | +59 pts | < 0.001 | improved |" in md


def test_the_outcome_comes_first(rendered):
    """Per trained policy, one verdict line (criteria, KL, monitor flags) before anything
    else; the gate override and the simulated panel come after it."""
    _, page, md, _ = rendered
    ppo = (
        "PPO: signs_off 12% → 71% (p < 0.001) improved; hedging 14% → 6% (p 0.031) improved; "
        "concise 52% → 58% (p 0.410) no significant change; KL 4.100 nats per reply; "
        "monitor flags after training: hedging; no live monitoring (no monitors.jsonl)."
    )
    dpo = "DPO: signs_off 12% → 44% (p < 0.001) improved; "
    lines = md.splitlines()
    assert lines[:4] == ["# support-replies: rlhfkit report", "", "## Outcome", ""]
    assert lines[4] == f"- {ppo}" and lines[5].startswith(f"- {dpo}")
    assert (
        "concise 52% → 31% (p 0.004) moved the wrong way; KL not measured; no monitor flags."
        in (lines[5])
    )
    assert md.index("## Outcome") < md.index("simulated") < md.index("overridden by an admin")
    # the page: the outcome is the first section, each part coloured by what it means
    body = page.split("<body>")[1]
    assert body.index('id="outcome"') < body.index("Simulated annotators.")
    assert body.index('id="outcome"') < body.index("<nav>") < body.index("overridden by an admin")
    assert '<span class="bad">concise 52% → 31% (p 0.004) moved the wrong way</span>' in page
    assert '<span class="good">signs_off 12% → 71% (p &lt; 0.001) improved</span>' in page
    assert "No live monitoring: no monitors.jsonl" in page


def test_untrusted_text_is_escaped(rendered):
    _, page, md, _ = rendered
    assert "&lt;script&gt;window.__xss = 1;" in page
    # the monitor explanation's markup is text too
    assert "&lt;b&gt;(I think…)&lt;/b&gt;" in page
    assert "<script" not in md and "&lt;script&gt;" not in md  # samples stay out of the .md


def test_missing_inputs_say_not_run(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(FILES / "rm", run / "rm")
    page, md = _render(run)
    # outcome, task, annotation, training, criteria, samples
    assert page.count('class="notrun"') == 6
    assert "81.2%" in page and "No trained policy to judge yet" in page
    assert "Not run: no project spec" in page and "Not run: no policy evaluation" in md
    assert "No trained policy to judge yet" in md


# --- PPO's live monitors (monitors.jsonl) --------------------------------------------------------

PADDING = (
    " Our warehouse team double-checks every parcel, our couriers track each van hourly, and "
    "our friendly advisers answer emails seven days a week from Leeds and Bristol."
)


def _live_flags(run: Path) -> None:
    """Ten PPO steps through the real live monitors (`RunWatch`, as `train ppo` runs them):
    the first two like the reference, the other eight padded to twice its length."""
    from rlhfkit.train.configs import PPOConfig
    from rlhfkit.train.monitoring import RunWatch
    from tests.train.test_monitoring import FINE, PROMPTS, One

    cfg = PPOConfig(project=run / "project", output_dir=run / "ppo")
    watch = RunWatch(cfg, One())
    for step in range(1, 11):
        texts = FINE if step <= 2 else [t + PADDING for t in FINE]
        hits = watch.criteria_hits(texts)
        means = {"kl": 0.1} | {k: float(v.mean()) for k, v in hits.items()}
        watch.check(step, PROMPTS, texts, [0.5] * 4, means, entropy=2.0)


def test_live_monitor_flags_reach_the_report(run_dir):
    _live_flags(run_dir)
    lines = (run_dir / "ppo" / "monitors.jsonl").read_text().splitlines()
    assert len(lines) == 10
    page, md = _render(run_dir)
    outcome = md.split("## Outcome")[1].split("\n\n")[1]
    assert outcome.startswith("- PPO: ") and outcome.count("\n") == 1  # PPO, then DPO
    assert (
        "; live monitor flags during training: length_inflation on 8 of 10 steps."
        in (outcome.splitlines()[0])
    )
    assert "no monitor flags." in outcome.splitlines()[1]  # DPO has no live monitors
    # the training section: steps raised, first and last, the latest explanation
    row = _row(page, "length_inflation", nth=0)
    assert '<td class="num bad">8 of 10</td>' in row and "3 – 10" in row
    # 9.25 words at the reference, 26 more padded: (9.25 + 26) / 9.25 = 3.8x
    assert "Responses grew to 3.8x the reference length (35 words" in row
    assert "live monitor flags: length_inflation on 8 of 10 steps (steps 3–10: Responses grew" in md
    assert '<li class="flagged"><strong>PPO</strong>' in page
    assert "live monitors: ppo" in [s for s in load_run(run_dir).sources]


def test_monitors_jsonl_cut_by_a_kill_or_broken(run_dir):
    _live_flags(run_dir)
    path = run_dir / "ppo" / "monitors.jsonl"
    with path.open("a") as f:
        f.write('{"step": 11, "fla')
    steps = load_run(run_dir).training[0].monitors
    assert [s.step for s in steps] == list(range(1, 11))
    path.write_text('{"step": 1, "flags": []}\n{"step": 2, "flags": "none"}\n{"step": 3}\n')
    r = run_cli("report", str(run_dir))
    assert r.code == 2 and "Traceback" not in r.stderr
    assert "monitors.jsonl:2: expected" in r.stderr and "monitors.jsonl:3: expected" in r.stderr
    # an empty log: monitoring ran and raised nothing
    path.write_text('{"step": 1, "flags": []}\n')
    page, md = _render(run_dir)
    assert "No monitor fired on the 1 step checked." in page
    assert "live monitors: no flag on 1 step" in md


def test_a_metrics_line_cut_by_a_kill_is_dropped(run_dir):
    with (run_dir / "ppo" / "metrics.jsonl").open("a") as f:
        f.write('{"step": 31, "rew')
    run = load_run(run_dir)
    assert [len(r.records) for r in run.training] == [30, 20]
    assert [r.kind for r in run.training] == ["ppo", "dpo"]


def test_explicit_options_add_to_the_run_folder(run_dir, tmp_path):
    other = tmp_path / "elsewhere" / "rloo"
    shutil.copytree(run_dir / "eval" / "dpo", other)
    run = load_run(run_dir, evals=[other], training=[run_dir / "dpo"])
    assert [e.name for e in run.evals] == ["ppo", "dpo", "rloo"]
    assert [t.name for t in run.training] == ["ppo", "dpo"]
    assert "evaluation: rloo" in run.sources


def test_a_file_of_the_wrong_shape_is_named(run_dir):
    (run_dir / "rm" / "eval_rm.json").write_text('{"slices": [1, 2]}')
    r = run_cli("report", str(run_dir))
    assert r.code == 2 and "Traceback" not in r.stderr
    assert "eval_rm.json: not what `rlhfkit report` expects" in r.stderr


def test_changed_criteria_are_announced(run_dir):
    from rlhfkit.report import sections

    path = run_dir / "eval" / "dpo" / "eval.json"
    data = json.loads(path.read_text())
    data["freeze"] |= {"changed": True, "message": "criteria changed after sft: hedging added"}
    path.write_text(json.dumps(data))
    ev = load_run(run_dir).evals[1]
    assert sections.eval_section(ev)["criteria_changed"] == data["freeze"]["message"]


def test_another_schema_version_is_refused(run_dir):
    path = run_dir / "eval" / "ppo" / "eval.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"schema": "rlhfkit.eval_policy/2"}))
    with pytest.raises(UserError, match=re.escape("schema 'rlhfkit.eval_policy/2'")):
        load_run(run_dir)


# --- the CLI ----------------------------------------------------------------------------------


def test_cli_only_options_and_bad_inputs(run_dir, tmp_path):
    out = tmp_path / "out" / "client.html"
    r = run_cli(
        "report", "--out", str(out), "--eval", str(run_dir / "eval" / "ppo"), "--samples", "3"
    )
    assert r.code == 0, r.stderr
    assert out.exists() and out.with_suffix(".md").exists()
    page = out.read_text()
    assert "(3 of 15 prompts" in page and page.count('class="notrun"') == 4

    broken = run_dir / "eval" / "dpo" / "eval.json"
    broken.write_text('{\n  "criteria": [\n  oops\n}\n')
    r = run_cli("report", str(run_dir))
    assert r.code == 2
    assert "eval.json:3: not valid JSON" in r.stderr and "Traceback" not in r.stderr
    assert not (run_dir / "report.html").exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    r = run_cli("report", str(empty))
    assert r.code == 2 and "nothing to report on" in r.stderr
    r = run_cli("report", str(tmp_path / "nope"))
    assert r.code == 2 and "no such run folder" in r.stderr


def test_help_teaches_the_layout():
    r = run_cli("report", "--help")
    assert r.code == 0
    assert "annotation/agreement.json" in r.stdout and "eval/POLICY/eval.json" in r.stdout


# --- in a real browser ---------------------------------------------------------------------------


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("needs Debian's chromium (apt-get install -y chromium)")
    return path


@pytest.mark.slow
def test_report_in_headless_chromium(rendered, tmp_path):
    pytest.importorskip("playwright")
    import numpy as np
    from PIL import Image
    from playwright.sync_api import sync_playwright

    url = (rendered[0] / "report.html").as_uri()
    shot = tmp_path / "report.png"
    with sync_playwright() as p:
        # --no-sandbox: the suite runs as root, where Chromium's sandbox refuses to start
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        errors, requests = [], []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(url)
        page.wait_for_load_state("load")
        page.screenshot(path=str(shot), full_page=False)
        images = page.eval_on_selector_all(
            "img", "els => els.map(e => [e.complete, e.naturalWidth])"
        )
        xss = page.evaluate("() => window.__xss === undefined")
        cell = page.locator("td >> text=window.__xss").first.inner_text()
        browser.close()
    assert errors == []
    assert all(u == url or u.startswith("data:") for u in requests), requests
    assert len(images) == 6 and all(done and width > 0 for done, width in images)
    assert xss, "a sample's <script> ran"
    assert cell.startswith("<script>")  # shown literally, as text
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 20, "the screenshot is blank"


def test_training_metrics_too_small_for_three_decimals_keep_three_digits():
    from rlhfkit.report.format import metric, num

    # a learning rate during warmup and at a cosine's end; elsewhere num's fixed decimals
    assert metric(3.3e-4) == "0.00033" and metric(5.09e-06) == "5.09e-06"
    assert metric(-4e-5) == "-4e-05" and metric(0.0005) == "0.001" == num(0.0005)
    assert metric(0.0) == "0.000" and metric(1.2594) == "1.259" and metric(None) == "n/a"
    assert num(3.3e-4) == "0.000"  # correlations, intervals: near zero reads as zero
