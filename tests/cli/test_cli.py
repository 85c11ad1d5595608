"""The real `rlhfkit` executable, run as a user runs it."""

import json
import re
import subprocess
import sys
import time

import pytest

from tests.conftest import messages, run_cli, write_lines


@pytest.mark.slow
def test_help_is_fast_and_follows_the_pipeline():
    started = time.time()
    result = run_cli("--help", own_process=True)  # start-up time needs a fresh process
    elapsed = time.time() - started
    assert result.code == 0
    assert elapsed < 1.5, f"rlhfkit --help took {elapsed:.2f} s"
    listed = re.findall(r"^  (\w+)  ", result.stdout, flags=re.M)  # name, then its help
    assert listed == [
        "init", "project", "plan", "data", "models", "generate", "annotate", "agreement",
        "train", "eval", "report", "doctor", "run", "demo",
    ]  # fmt: skip


@pytest.mark.slow
def test_help_imports_no_heavy_library():
    code = (
        "import sys; from rlhfkit.cli import app\n"
        "heavy = [m for m in ('torch', 'transformers', 'datasets') if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    "command",
    [
        ["data", "validate"],
        ["data", "convert"],
        ["models", "pull"],
        ["init"],
        ["generate"],
        ["demo"],
    ],
)
def test_every_command_has_help(command):
    result = run_cli(*command, "--help")
    assert result.code == 0 and "Usage:" in result.stdout


def test_help_from_field_docs_keeps_square_brackets():
    # rich markup took "[monitors]" in the field doc of --monitor for a style tag and dropped it
    result = run_cli("train", "ppo", "--help")
    assert result.code == 0
    assert "[monitors]" in result.stdout


def test_generate_leaves_to_the_spec_what_its_generate_table_holds():
    # project.py sits below generate.py and cannot read SamplingConfig: the spec's defaults
    # are the same numbers, and this keeps them so
    from rlhfkit.cli.generate import FROM_SPEC
    from rlhfkit.generate import SamplingConfig
    from rlhfkit.project import GenerateSettings

    # the three others choose which prompts and pairs, not how to sample
    assert set(GenerateSettings.model_fields) == set(FROM_SPEC) | {
        "limit", "all_pairs", "start_samples"
    }
    sampling = SamplingConfig()
    for name in FROM_SPEC:
        assert getattr(sampling, name) == getattr(GenerateSettings(), name), name


def test_options_built_from_config_classes_keep_their_names():
    # the README and scripts use these flags; the config fields behind them are named otherwise
    policy = " ".join(run_cli("eval", "policy", "--help").stdout.split())
    assert "--judge " in policy and "--judges" not in policy
    assert "--confidence" not in policy  # the intervals stay at 95%, as before
    assert "(one of: permutation, bootstrap, two_proportion)" in policy
    rm = run_cli("eval", "rm", "--help").stdout
    assert "--slice " in rm and "--slice-by" not in rm
    generate = " ".join(run_cli("generate", "--help").stdout.split())
    assert "(default: the spec's, else 0.9)" in generate  # SamplingConfig's, read not retyped


def test_validate_good_file(tmp_path):
    path = write_lines(
        tmp_path / "prefs.jsonl",
        [
            {"prompt": "Q", "chosen": "A", "rejected": "B", "votes": {"a": "chosen"}},
            {"prompt": "R", "chosen": "C", "rejected": "D"},
        ],
    )
    result = run_cli("data", "validate", str(path))
    assert result.code == 0, result.stderr
    assert "preference (standard), 2 rows; metadata: votes" in result.stdout
    as_json = json.loads(run_cli("data", "validate", "--json", str(path)).stdout)
    assert as_json["format"] == "preference" and as_json["rows"] == 2


def test_validate_bad_file_lists_every_row_and_exits_2(tmp_path):
    path = write_lines(
        tmp_path / "bad.jsonl",
        [
            {"prompt": "Q", "chosen": "A", "rejected": "A"},
            "{oops",
            {"prompt": messages(("user", "hi")), "completion": messages(("user", "again"))},
        ],
    )
    result = run_cli("data", "validate", str(path))
    assert result.code == 2
    assert "bad.jsonl:1: 'chosen' and 'rejected' are identical" in result.stderr
    assert "bad.jsonl:2: bad JSON" in result.stderr
    assert "bad.jsonl:3:" in result.stderr
    assert "Traceback" not in result.stderr


def test_convert_round_trip_and_refusal(tmp_path):
    src = write_lines(
        tmp_path / "implicit.jsonl", [{"chosen": "Q: sure thing", "rejected": "Q: no way"}]
    )
    result = run_cli(
        "data", "convert", str(src), str(tmp_path / "explicit.jsonl"), "--to", "explicit"
    )
    assert result.code == 0, result.stderr
    row = json.loads((tmp_path / "explicit.jsonl").read_text())
    assert row == {"prompt": "Q:", "chosen": " sure thing", "rejected": " no way"}
    assert (
        run_cli(
            "data",
            "convert",
            str(tmp_path / "explicit.jsonl"),
            str(tmp_path / "ds"),
        ).code
        == 0
    )
    assert (
        "preference (standard), 1 rows" in run_cli("data", "validate", str(tmp_path / "ds")).stdout
    )

    bad = write_lines(tmp_path / "bad.jsonl", [{"chosen": "same", "rejected": "same"}])
    result = run_cli("data", "convert", str(bad), str(tmp_path / "never.jsonl"))
    assert result.code == 2 and "bad.jsonl:1:" in result.stderr
    assert not (tmp_path / "never.jsonl").exists()


def test_init_then_refuses_to_overwrite(tmp_path):
    result = run_cli("init", str(tmp_path / "proj"))
    assert result.code == 0, result.stderr
    assert (tmp_path / "proj" / "rlhfkit.toml").exists()
    again = run_cli("init", str(tmp_path / "proj"))
    assert again.code == 2 and "not empty" in again.stderr


@pytest.mark.parametrize("template", ["support-replies", "memo-format", "decline-off-topic"])
def test_init_from_each_template_says_what_to_do_next(tmp_path, template):
    result = run_cli("init", str(tmp_path / "proj"), "--template", template)
    assert result.code == 0, result.stderr
    assert f"'{template}' template" in result.stdout
    assert "rlhfkit project check" in result.stdout and "rlhfkit run --project" in result.stdout
    assert (tmp_path / "proj" / "data" / "anchors.jsonl").exists()
    spec = (tmp_path / "proj" / "rlhfkit.toml").read_text()
    assert 'name = "proj"' in spec  # the project is named after its folder, not the template


def test_init_keeps_the_old_example_option_and_names_unknown_templates(tmp_path):
    result = run_cli("init", str(tmp_path / "old"), "--example", "memo-format")
    assert result.code == 0 and "'memo-format' template" in result.stdout
    result = run_cli("init", str(tmp_path / "new"), "--template", "haiku")
    assert result.code == 2 and "templates: support-replies, memo-format" in result.stderr
    assert not (tmp_path / "new").exists()


def test_bad_spec_names_the_field(tmp_path):
    run_cli("init", str(tmp_path / "proj"))
    spec = tmp_path / "proj" / "rlhfkit.toml"
    spec.write_text(
        spec.read_text().replace("agreement_threshold = 0.65", "agreement_threshold = 1.5")
    )
    result = run_cli("generate", "--project", str(tmp_path / "proj"), "--model", "tiny-random")
    assert result.code == 2
    assert (
        "rlhfkit.toml: annotation.agreement_threshold: Input should be less than or equal"
        in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_models_pull_and_list():
    result = run_cli("models", "pull", "tiny-random")
    assert result.code == 0 and "tiny-random" in result.stdout
    listing = run_cli("models", "list")
    assert "smollm2-135m-instruct" in listing.stdout


@pytest.mark.slow
def test_generate_through_the_cli(tmp_path):
    prompts = write_lines(
        tmp_path / "prompts.jsonl",
        [{"prompt": messages(("user", f"Help me {i}"))} for i in range(3)],
    )
    out = tmp_path / "cand.jsonl"
    result = run_cli(
        "generate",
        "--model",
        "tiny-random",
        "--prompts",
        str(prompts),
        "--out",
        str(out),
        "--max-new-tokens",
        "5",
        "--n",
        "2",
        "--seed",
        "3",
    )
    assert result.code == 0, result.stderr
    assert "pairs from 3 prompts" in result.stdout
    assert "comparison (conversational)" in run_cli("data", "validate", str(out)).stdout


def test_missing_model_is_exit_2_without_traceback(tmp_path):
    prompts = write_lines(tmp_path / "prompts.jsonl", [{"prompt": "hi"}])
    result = run_cli(
        "generate",
        "--model",
        str(tmp_path / "nope"),
        "--prompts",
        str(prompts),
        "--out",
        str(tmp_path / "c.jsonl"),
    )
    assert result.code == 2 and "never downloads" in result.stderr
    assert "Traceback" not in result.stderr


def test_convert_never_overwrites_a_folder_that_is_not_a_dataset(tmp_path):
    src = write_lines(tmp_path / "p.jsonl", [{"prompt": "Q", "chosen": "A", "rejected": "B"}])
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("mine")
    result = run_cli("data", "convert", str(src), str(precious))
    assert result.code == 2 and (precious / "notes.txt").read_text() == "mine"
    inside = run_cli("data", "convert", str(tmp_path / "ds"), str(tmp_path / "ds" / "x.jsonl"))
    assert inside.code == 2


def test_convert_to_implicit_warns_when_the_boundary_would_be_lost(tmp_path):
    src = write_lines(tmp_path / "p.jsonl", [
        {"prompt": "Capital?\nA:", "chosen": " The capital is Paris.",
         "rejected": " The capital is Lyon."}])
    result = run_cli("data", "convert", str(src), str(tmp_path / "i.jsonl"), "--to", "implicit")
    assert result.code == 0 and "in 1 rows the answers begin alike" in result.stdout


def test_validate_goes_on_past_a_missing_file(tmp_path):
    good = write_lines(tmp_path / "good.jsonl", [{"prompt": "Q"}])
    result = run_cli("data", "validate", str(tmp_path / "missing.jsonl"), str(good))
    assert result.code == 2
    assert "missing.jsonl: no such file" in result.stderr
    assert "good.jsonl: prompt_only (standard), 1 rows" in result.stdout


def test_user_mistakes_never_show_a_traceback(tmp_path):
    prompts = write_lines(tmp_path / "p.jsonl", [{"prompt": "hi"}])
    spec_dir = tmp_path / "specdir"
    (spec_dir / "rlhfkit.toml").mkdir(parents=True)
    cases = [
        ("models", "pull", "no-such-model"),
        ("generate", "--model", "tiny-random", "--prompts", str(prompts), "--out",
         str(tmp_path / "c.jsonl"), "--limit", "0"),
        ("generate", "--project", str(spec_dir)),
        ("data", "convert", str(prompts), "/proc/forbidden/x.jsonl"),
        ("train", "dpo", "--data", str(prompts), "--model", "tiny-random",
         "--output-dir", str(tmp_path / "o")),
    ]
    for args in cases:
        result = run_cli(*args)
        assert result.code == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr, args
