"""A PPO run's watch without a model: criteria hits, the flags' log, a flag reported once,
and the two early stops (a monitor under --stop-on-flag; the caller's samples hook)."""

import json

import torch

from rlhfkit.templates import init_project
from rlhfkit.train.configs import PPOConfig
from rlhfkit.train.monitoring import RunWatch


class One:
    """An accelerator of one process."""

    num_processes = 1
    device = torch.device("cpu")
    is_main_process = True


PROMPTS = ["Order 1 is late because"] * 4
FINE = [
    "The courier lost it; a new parcel ships today.",
    "It was held at customs and is on its way now.",
    "The warehouse missed it, so we refunded the postage.",
    "Bad weather slowed the van; it arrives tomorrow.",
]
LOOPING = ["late late late late late late late late late late"] * 4


def watched(tmp_path, **settings):
    project = init_project(tmp_path / "project").root
    with open(project / "rlhfkit.toml", "a") as spec:
        spec.write("\n[monitors]\nrepetition = 0.1\nwindow = 2\nreward_rise = 1000\n")
    cfg = PPOConfig(project=project, output_dir=tmp_path / "out", **settings)
    (tmp_path / "out").mkdir()
    return RunWatch(cfg, One())


def step(watch, n, texts):
    hits = watch.criteria_hits(texts)
    means = {"kl": 0.1} | {k: float(v.mean()) for k, v in hits.items()}
    return watch.check(n, PROMPTS, texts, [0.0, 1.0, 0.0, 1.0], means, entropy=2.0)


def test_a_flag_is_logged_every_step_but_fires_once(tmp_path):
    watch = watched(tmp_path)
    assert watch.criteria and all(len(v) == 4 for v in watch.criteria_hits(FINE).values())
    assert step(watch, 1, FINE) == {"monitor_flags": 0.0}
    assert step(watch, 2, LOOPING)["monitor_flags"] >= 1
    assert "repetition" in [f.name for f in watch.fired]
    step(watch, 3, LOOPING)
    assert "repetition" not in [f.name for f in watch.fired]  # still up, not new
    assert watch.stop_reason(3, PROMPTS, LOOPING, {}) is None  # no --stop-on-flag
    lines = [json.loads(x) for x in (tmp_path / "out" / "monitors.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3]
    assert "repetition" in [f["name"] for f in lines[2]["flags"]]
    watch.resume_at(1)
    assert (tmp_path / "out" / "monitors.jsonl").read_text().count("\n") == 1


def test_stop_on_flag_names_the_flag_that_fired(tmp_path):
    watch = watched(tmp_path, stop_on_flag=True)
    step(watch, 1, FINE)
    assert watch.stop_reason(1, PROMPTS, FINE, {}) is None
    step(watch, 2, LOOPING)
    reason = watch.stop_reason(2, PROMPTS, LOOPING, {})
    assert reason.startswith("reward-hacking monitor: ") and "repetition (" in reason


def test_the_samples_hook_stops_the_run_with_its_reason(tmp_path):
    seen = []

    def hook(step, prompts, responses, record):
        seen.append((step, record["reward"]))
        return "enough" if step == 2 else None

    cfg = PPOConfig(output_dir=tmp_path)  # no project: no criteria, no monitors
    watch = RunWatch(cfg, One(), on_samples=hook)
    assert watch.criteria_hits(FINE) == {} and step(watch, 1, FINE) == {}
    assert watch.stop_reason(1, PROMPTS, FINE, {"reward": 0.5}) is None
    assert watch.stop_reason(2, PROMPTS, FINE, {"reward": 0.7}) == "enough"
    assert seen == [(1, 0.5), (2, 0.7)]
