"""Candidate pairs: sampled in seeded batches, resumable, and written as annotation pairs (the
sampler itself: tests/train/test_rollout.py)."""

import json

import pytest

from rlhfkit.data import Format, load
from rlhfkit.errors import UserError
from rlhfkit.generate import SamplingConfig, generate_candidates
from tests.conftest import messages, write_lines

PROMPTS = [{"prompt": messages(("user", f"Question number {i}?"))} for i in range(5)]


def test_greedy_with_several_samples_is_refused():
    with pytest.raises(UserError, match="greedy"):
        SamplingConfig(n=2, temperature=0).check()


@pytest.mark.slow
def test_candidates_are_valid_comparison_rows(tmp_path):
    prompts = write_lines(tmp_path / "prompts.jsonl", PROMPTS)
    out = tmp_path / "cand.jsonl"
    cfg = SamplingConfig(n=4, max_new_tokens=6, batch_size=2)
    result = generate_candidates("tiny-random", prompts, out, cfg)
    data = load(out)
    assert data.kind.format is Format.COMPARISON and data.kind.conversational
    assert result.pairs == len(data) == 10 - result.identical_skipped
    row = data.rows[0]
    assert row["prompt"] == PROMPTS[0]["prompt"]
    assert row["response_a"][0]["role"] == "assistant"
    manifest = json.loads((tmp_path / "cand.jsonl.manifest.json").read_text())
    assert manifest["inputs"]["prompts"]["sha256"] and manifest["config"]["n"] == 4
    assert not (tmp_path / ".cand.jsonl.partial").exists()


@pytest.mark.slow
def test_all_pairs(tmp_path):
    prompts = write_lines(tmp_path / "prompts.jsonl", PROMPTS[:1])
    cfg = SamplingConfig(n=4, max_new_tokens=6)
    result = generate_candidates("tiny-random", prompts, tmp_path / "c.jsonl", cfg, all_pairs=True)
    assert result.pairs + result.identical_skipped == 6


@pytest.mark.slow
def test_interrupted_run_resumes_from_its_last_batch(tmp_path):
    prompts = write_lines(tmp_path / "prompts.jsonl", PROMPTS)
    cfg = SamplingConfig(n=2, max_new_tokens=6, batch_size=2)
    reference = generate_candidates("tiny-random", prompts, tmp_path / "ref.jsonl", cfg)

    calls = []

    def crash_after_two_batches(done, total):
        calls.append(done)
        if done == 4:
            raise KeyboardInterrupt

    out = tmp_path / "out.jsonl"
    with pytest.raises(KeyboardInterrupt):
        generate_candidates("tiny-random", prompts, out, cfg, on_progress=crash_after_two_batches)
    assert not out.exists()
    partial = tmp_path / ".out.jsonl.partial"
    assert len(partial.read_text().splitlines()) == 3  # header + two finished batches
    with partial.open("a") as f:
        f.write('[[["cut off mid-wri')  # a batch the crash interrupted

    seen = []
    resumed = generate_candidates(
        "tiny-random", prompts, out, cfg, on_progress=lambda d, t: seen.append(d)
    )
    assert seen[0] == 4  # started after the two finished batches
    assert resumed.responses == reference.responses
    assert out.read_text().replace("out.jsonl", "") == (tmp_path / "ref.jsonl").read_text()


def test_prompts_of_the_wrong_format(tmp_path):
    bad = write_lines(tmp_path / "lm.jsonl", [{"text": "hello"}])
    with pytest.raises(UserError, match="expected prompt_only"):
        generate_candidates("tiny-random", bad, tmp_path / "c.jsonl", SamplingConfig())
    assert not (tmp_path / "c.jsonl").exists()


@pytest.mark.slow
def test_resume_notices_changed_prompts(tmp_path):
    prompts = write_lines(tmp_path / "prompts.jsonl", PROMPTS)
    cfg = SamplingConfig(n=2, max_new_tokens=4, batch_size=1)

    def stop_after_two(done, total):
        if done == 2:
            raise KeyboardInterrupt

    out = tmp_path / "out.jsonl"
    with pytest.raises(KeyboardInterrupt):
        generate_candidates("tiny-random", prompts, out, cfg, on_progress=stop_after_two)
    write_lines(prompts, PROMPTS[:1])
    seen = []
    result = generate_candidates("tiny-random", prompts, out, cfg,
                                 on_progress=lambda d, t: seen.append(d))
    assert seen[0] == 0 and result.prompts == 1  # started over: the prompts changed


@pytest.fixture(scope="module")
def other_model(tmp_path_factory):
    from rlhfkit.models import tiny_model

    model, tok = tiny_model(seed=5)
    folder = tmp_path_factory.mktemp("other")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


@pytest.mark.slow
def test_replies_of_another_model_join_each_prompts(tmp_path, other_model):
    prompts = write_lines(tmp_path / "prompts.jsonl", PROMPTS[:3])
    cfg = SamplingConfig(n=2, max_new_tokens=6, batch_size=2)
    result = generate_candidates("tiny-random", prompts, tmp_path / "c.jsonl", cfg,
                                 all_pairs=True, compare_with=other_model)  # fmt: skip
    assert [len(r) for r in result.responses] == [3, 3, 3]  # 2 + 1 per prompt
    rows = load(tmp_path / "c.jsonl").rows
    assert result.pairs + result.identical_skipped == 9
    by_id = {r["id"]: r for r in rows}
    first = by_id["p00000-0-1"]
    assert first["models"] == ["tiny-random", "tiny-random"] and first["pairing"] == "same model"
    across = by_id["p00000-0-2"]
    assert across["models"] == ["tiny-random", other_model]
    assert across["pairing"] == "across models"
    manifest = json.loads((tmp_path / "c.jsonl.manifest.json").read_text())
    assert manifest["config"]["compare_with"] == other_model


@pytest.mark.slow
def test_a_run_cut_off_in_the_other_models_turn_resumes_there(tmp_path, other_model):
    prompts = write_lines(tmp_path / "prompts.jsonl", PROMPTS)
    cfg = SamplingConfig(n=2, max_new_tokens=6, batch_size=2)
    run = dict(all_pairs=True, compare_with=other_model, compare_n=2)
    reference = generate_candidates("tiny-random", prompts, tmp_path / "ref.jsonl", cfg, **run)
    seen = []

    def stop_in_the_second_models_turn(done, total):
        seen.append((done, total))
        if done == 7:  # all 5 prompts of the first model, 2 of the second
            raise KeyboardInterrupt

    out = tmp_path / "out.jsonl"
    with pytest.raises(KeyboardInterrupt):
        generate_candidates("tiny-random", prompts, out, cfg,
                            on_progress=stop_in_the_second_models_turn, **run)
    assert seen[-1] == (7, 10)
    resumed_from = []
    resumed = generate_candidates("tiny-random", prompts, out, cfg,
                                  on_progress=lambda d, t: resumed_from.append(d), **run)
    assert resumed_from[0] == 7
    assert resumed.responses == reference.responses
