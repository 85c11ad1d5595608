"""eval.json and eval_rm.json as typed records: a file read and written again is the same
file, byte for byte; a file of another schema version or of the wrong shape is refused."""

import json
import math
import re
from pathlib import Path

import pytest

from rlhfkit.errors import UserError
from rlhfkit.evaluate.schema import (
    PolicyEvalResult,
    RMEvalResult,
    SchemaError,
    read_json,
    write_json,
)

RUN = Path(__file__).parents[1] / "report" / "files" / "run"
WRITTEN = Path(__file__).parent / "files" / "eval.json"
"""As `eval policy` wrote it before the schema module (tiny-random against itself, the panel
judge; paths made relative)."""
FILES = [
    (PolicyEvalResult, RUN / "eval" / "ppo" / "eval.json"),  # KL estimated, reward model
    (PolicyEvalResult, RUN / "eval" / "dpo" / "eval.json"),  # KL not estimated: value, reason
    (RMEvalResult, RUN / "rm" / "eval_rm.json"),
]


def test_eval_json_round_trips_byte_for_byte(tmp_path):
    record = read_json(PolicyEvalResult, WRITTEN)
    out = tmp_path / "eval.json"
    write_json(record, out)
    assert out.read_text() == WRITTEN.read_text()


@pytest.mark.parametrize(("cls", "path"), FILES, ids=["ppo", "dpo", "rm"])
def test_the_report_fixtures_round_trip_unchanged(cls, path, tmp_path):
    """Hand-made files (some keys in another order than eval policy writes them)."""
    data = json.loads(path.read_text())
    record = cls.parse(data, path)
    assert record.to_json() == data
    out = tmp_path / path.name
    write_json(record, out)
    assert json.loads(out.read_text()) == data
    assert read_json(cls, out) == record


def test_typed_fields_read_as_the_file_says():
    ev = read_json(PolicyEvalResult, RUN / "eval" / "ppo" / "eval.json")
    assert [c.name for c in ev.criteria] == ["signs_off", "hedging", "concise"]
    assert ev.criteria[0].after.rate == 0.71 and ev.criteria[1].after.ci == [0, 0.14]
    assert ev.win_rates[1].judge == "panel (simulated)" and ev.win_rates[1].both_bad == 12
    assert ev.kl.value == 4.1 and ev.kl.reason is None and ev.reward.rise_sd == 1.4
    assert ev.monitors[3].reference is None and ev.flagged == ["hedging"]
    written = json.loads((RUN / "eval" / "ppo" / "eval.json").read_text())["reward"]
    assert list(ev.reward.to_json()) == list(written)  # model first, as eval policy writes it
    dpo = read_json(PolicyEvalResult, RUN / "eval" / "dpo" / "eval.json")
    assert dpo.kl.value is None and dpo.kl.ci is None and "tokenizers" in dpo.kl.reason
    rm = read_json(RMEvalResult, RUN / "rm" / "eval_rm.json")
    assert rm.slices["topic"]["refund request"].pairs == 12
    assert rm.human_majority.rm_agreement.accuracy == 0.804
    assert rm.calibration.bins[3].confidence is None


def test_non_finite_values_are_written_null_and_read_back_as_written(tmp_path):
    """A NaN statistic is written null with the object's ``non_finite`` naming it (as
    strict_json.nulled does for every result file), and that file round-trips too."""
    data = json.loads((RUN / "eval" / "ppo" / "eval.json").read_text())
    record = PolicyEvalResult.parse(data, "eval.json")
    record.criteria[2].p_value = math.nan
    record.reward.rise_sd = math.inf
    out = tmp_path / "eval.json"
    write_json(record, out)
    written = json.loads(out.read_text())
    assert written["criteria"][2]["p_value"] is None
    assert written["criteria"][2]["non_finite"] == {"p_value": "NaN"}
    assert written["reward"]["non_finite"] == {"rise_sd": "Infinity"}
    again = read_json(PolicyEvalResult, out)
    assert again.criteria[2].p_value is None and again.to_json() == written
    # an optional key that was NaN stays in the file as null
    record.kl.per_token = math.nan
    write_json(record, out)
    assert read_json(PolicyEvalResult, out).to_json()["kl"]["per_token"] is None


def test_human_majority_without_a_majority_keeps_its_three_keys():
    data = json.loads((RUN / "rm" / "eval_rm.json").read_text())
    data["human_majority"] = {"rows_with_votes": 2, "rows_with_majority": 0, "rm_agreement": None}
    assert RMEvalResult.parse(data, "eval_rm.json").to_json() == data


@pytest.mark.parametrize(("cls", "path"), FILES[::2], ids=["eval_policy", "eval_rm"])
def test_another_schema_version_is_a_clear_error(cls, path, tmp_path):
    data = json.loads(path.read_text())
    newer = data["schema"][:-1] + "2"
    out = tmp_path / path.name
    out.write_text(json.dumps(data | {"schema": newer}))
    with pytest.raises(UserError, match=re.escape(f"schema '{newer}'; this rlhfkit reads")):
        read_json(cls, out)
    # a hand-written file without a schema is read as it is
    data.pop("schema")
    assert cls.parse(data, "hand-written").to_json()["schema"] == cls.SCHEMA


def test_a_wrong_shape_names_where(tmp_path):
    data = json.loads((RUN / "eval" / "ppo" / "eval.json").read_text())
    data["criteria"][1]["before"]["rate"] = "high"
    with pytest.raises(SchemaError, match=re.escape("criteria[1].before.rate: expected float")):
        PolicyEvalResult.parse(data, "eval.json")
    del data["kl"]
    data["criteria"] = {"signs_off": {}}
    with pytest.raises(SchemaError, match="criteria: expected a list"):
        PolicyEvalResult.parse(data, "eval.json")
    out = tmp_path / "eval_rm.json"
    out.write_text('{"schema": "rlhfkit.eval_rm/1", "slices": [1, 2]}')
    with pytest.raises(UserError, match=r"eval_rm\.json: not a rlhfkit\.eval_rm/1 file: "):
        read_json(RMEvalResult, out)


def test_keys_this_version_does_not_know_are_read_past(tmp_path):
    """A note added by hand, or a field a later version writes, does not stop the report; a
    hand-made file without `seconds` or `schema` is read too (the report always read them)."""
    data = json.loads((RUN / "eval" / "ppo" / "eval.json").read_text())
    out = tmp_path / "eval.json"
    out.write_text(json.dumps(data | {"note": "run on the new laptop"}))
    read = read_json(PolicyEvalResult, out)
    assert read.to_json() == data
    for key in ("seconds", "schema"):
        data.pop(key, None)
    out.write_text(json.dumps(data))
    read = read_json(PolicyEvalResult, out)
    assert read.seconds is None and read.kl.value == data["kl"]["value"]
