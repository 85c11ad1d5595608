"""Stage configs composed from the spec: defaults < the spec's table < explicit values, and a
bad table key or value named by its spec line before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlhfkit.errors import UserError
from rlhfkit.pipeline.compose import effective, eval_config, spec_line, train_config
from rlhfkit.project import SPEC_FILE, load_project
from rlhfkit.templates import init_project
from rlhfkit.train.configs import DPOConfig, PPOConfig, SFTConfig


@pytest.fixture
def project_dir(tmp_path) -> Path:
    init_project(tmp_path / "p")
    return tmp_path / "p"


def _set(project_dir: Path, table: str, key: str, value: str) -> str:
    """Write `key = value` into [table] of the spec (replacing the key's line if there is
    one); return the new text."""
    spec = project_dir / SPEC_FILE
    lines = spec.read_text().splitlines()
    if f"[{table}]" not in lines:
        lines += ["", f"[{table}]"]
    start = lines.index(f"[{table}]")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[")), len(lines))
    mine = [i for i in range(start + 1, end) if lines[i].split("=")[0].strip() == key]
    if mine:
        lines[mine[0]] = f"{key} = {value}"
    else:
        lines.insert(start + 1, f"{key} = {value}")
    spec.write_text("\n".join(lines) + "\n")
    return spec.read_text()


def test_the_spec_table_sets_what_the_command_would_and_explicit_values_win(project_dir):
    project = load_project(project_dir)
    table = project.spec.train.dpo
    cfg = train_config("dpo", project, data=Path("d.jsonl"))
    assert isinstance(cfg, DPOConfig)
    for key, value in table.items():  # every value of the bundled [train.dpo] arrives
        assert getattr(cfg, key) == value, key
    assert cfg.learning_rate == DPOConfig().learning_rate  # not in the table: the default
    assert train_config("dpo", project, beta=0.5).beta == 0.5  # a flag beats the table
    assert train_config("dpo", project, beta=None).beta == table["beta"]  # None: not given
    overridden = load_project(project_dir, {"train.dpo.beta": 0.3})  # `run --set`
    assert train_config("dpo", overridden).beta == 0.3


def test_a_table_key_that_is_no_setting_is_named_with_its_line(project_dir):
    _set(project_dir, "train.sft", "bta", "2")
    text = _set(project_dir, "train.sft", "learning_rat", "1e-3")
    project = load_project(project_dir)
    line = spec_line(project, "train.sft", "learning_rat")
    assert text.splitlines()[line - 1] == "learning_rat = 1e-3"
    with pytest.raises(UserError) as e:
        train_config("sft", project)
    message = str(e.value)
    assert (
        f"rlhfkit.toml:{line}: train.sft.learning_rat: unknown setting; did you mean "
        "learning_rate?" in message.replace(str(project_dir) + "/", "")
    )
    assert f":{line + 1}: train.sft.bta: unknown setting" in message  # every problem at once


@pytest.mark.parametrize(
    ("table", "key", "value", "reason"),
    [
        ("train.ppo", "kl_coef", '"high"', "valid number"),
        ("train.ppo", "max_steps", "2.5", "valid integer"),
        ("train.dpo", "loss_type", '"ipo2"', "'sigmoid', 'ipo', 'hinge' or 'robust'"),
        ("train.reward", "lora", '"yes"', "valid boolean"),
        ("train.dpo", "output_dir", '"x"', "set by `rlhfkit run` itself"),
        ("train.ppo", "adaptive_kl", "true", "no longer a setting: use kl_target"),
        ("eval", "samples", '"2"', "valid integer"),
        ("eval", "out", '"x"', "set by `rlhfkit run` itself"),
    ],
)
def test_each_kind_of_bad_value_is_refused_with_its_line(project_dir, table, key, value, reason):
    _set(project_dir, table, key, value)
    project = load_project(project_dir)
    with pytest.raises(UserError, match=reason) as e:
        if table == "eval":
            eval_config(project)
        else:
            train_config({"train.ppo": "ppo", "train.dpo": "dpo", "train.reward": "rm"}[table],
                         project)  # fmt: skip
    line = spec_line(project, table, key)
    assert line is not None and f"rlhfkit.toml:{line}: {table}.{key}: " in str(e.value)


def test_the_configs_own_checks_say_where_the_value_came_from(project_dir):
    project = load_project(project_dir, {"train.sft.batch_size": 6, "train.sft.grad_accum": 4})
    with pytest.raises(UserError, match=r"\[train.sft\] \(or its flags\): --batch-size must be"):
        train_config("sft", project)


def test_the_defaults_are_the_measured_ones_and_follow_lora():
    assert SFTConfig().learning_rate == 1e-3 and SFTConfig(lora=False).learning_rate == 2e-5
    assert DPOConfig().learning_rate == 6e-4 and PPOConfig().learning_rate == 3e-4
    ppo = PPOConfig()
    assert (ppo.lr_schedule, ppo.warmup_ratio, ppo.missing_eos_penalty) == ("constant", 0.0, 1.0)
    assert ppo.whiten_rewards and ppo.center_rewards
    assert SFTConfig(learning_rate=1e-2).learning_rate == 1e-2  # given: kept


def test_the_effective_config_is_plain_json(project_dir):
    project = load_project(project_dir)
    cfg = eval_config(project, project=project.root, before="a", after="b", out=Path("o"))
    data = effective(cfg)
    assert data["judges"] == list(project.spec.eval["judges"]) and data["out"] == "o"
