"""The report's content as plain data: one dict per section, shared by the HTML and the
Markdown renderers. Every number is formatted here once, and every plain-language sentence
(what a verdict or a flag means for the client) is written here once.

A section whose inputs are missing has ``ran: False`` and a ``missing`` sentence saying which
command produces them; the renderers print "not run" for it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rlhfkit import __version__
from rlhfkit.evaluate.schema import CriterionResult, LengthResult, RewardResult, RMEvalResult
from rlhfkit.report import outcome, plots
from rlhfkit.report.doctor import doctor_section
from rlhfkit.report.format import interval, metric, num, pct, pvalue, signed_pct
from rlhfkit.report.inputs import PolicyEval, RunInputs, TrainingRun, wrong_shape

SIMULATED_PREFIX = "sim-"


# --- sections ---------------------------------------------------------------------------------


def overview(inp: RunInputs, annotation: dict, rm: dict) -> dict:
    """The first screen: what was taught, and the other stages' one-line checks (the gate,
    the reward model) that come after the outcome (outcome.py)."""
    spec = inp.project.spec if inp.project else None
    lines = []
    if annotation["ran"] and annotation.get("gate"):
        g = annotation["gate"]
        lines.append(
            f"Annotation: calibration agreement {g['value']} against a threshold of "
            f"{g['threshold']}: {g['verdict']}."
        )
    if rm["ran"] and rm.get("accuracy") is not None:
        lines.append(f"Reward model: {rm['accuracy']} held-out accuracy.")
    return {
        "title": spec.name if spec else (inp.run_dir.name if inp.run_dir else "rlhfkit run"),
        "task": spec.task if spec else None,
        "generated": time.strftime("%Y-%m-%d %H:%M"),
        "version": __version__,
        "headlines": lines,
        "simulated": annotation.get("simulated", False),
    }


def task_section(inp: RunInputs) -> dict[str, Any]:
    if inp.project is None:
        return {"ran": False, "missing": "no project spec (RUN_DIR/project/rlhfkit.toml)"}
    spec = inp.project.spec
    r = spec.rubric
    return {
        "ran": True,
        "name": spec.name,
        "task": spec.task,
        "base_model": spec.base_model,
        "rubric_version": r.version,
        "criteria": [{"name": c.name, "description": c.description} for c in r.criteria],
        "tie_policy": {
            "force_choice": "annotators must pick one reply (no ties)",
            "allow": "annotators may answer 'tie'",
        }[r.tie_policy],
        "both_bad_policy": {
            "force_choice": "annotators must pick one even when both are bad",
            "allow": "annotators may answer 'both bad'; such pairs are left out of training",
        }[r.both_bad_policy],
        "examples": [
            {
                "prompt": ex.prompt,
                "a": ex.response_a,
                "b": ex.response_b,
                "preferred": {"a": "A", "b": "B", "tie": "tie", "both_bad": "both bad"}[
                    ex.preferred
                ],
                "why": ex.why,
            }
            for ex in r.borderline_examples
        ],
        "success_criteria": [
            {
                "name": c.name,
                "description": c.description,
                "direction": c.direction,
                "detector": _detector(c.detector.model_dump(mode="json")),
            }
            for c in spec.success_criteria
        ],
        "criteria_hash": spec.criteria_hash(),
    }


def _detector(d: dict[str, Any]) -> str:
    kind = d.get("kind", "?")
    rest = ", ".join(f"{k}={v!r}" for k, v in d.items() if k != "kind" and v is not None)
    return f"{kind}: {rest}" if rest else kind


def annotation_section(inp: RunInputs) -> dict[str, Any]:
    """From `rlhfkit agreement --json` (the full statistics) and `rlhfkit annotate status
    --json` (the store's own gate with any admin override, progress, drift measured from
    each annotator's calibration-time accuracy). Either alone is enough."""
    a, st = inp.agreement or {}, inp.status or {}
    if not a and not st:
        return {
            "ran": False,
            "missing": "no agreement summary (`rlhfkit agreement LABELS --json` → "
            "annotation/agreement.json) or annotation status (`rlhfkit annotate status "
            "--json` → annotation/status.json)",
        }
    out: dict[str, Any] = {"ran": True}
    stats = a or st.get("agreement") or {}
    ci = stats.get("ci") or {}
    fmt = {"percent_agreement": lambda x: pct(x, 1)}
    out["stats"] = [
        {
            "name": label,
            "value": fmt.get(key, num)(stats[key]),
            "ci": interval(ci.get(key), fmt.get(key, num)),
            "note": stats.get(f"{key}_note") or note,
        }
        for key, label, note in (
            ("percent_agreement", "percent agreement", "over every label, not the gate"),
            ("krippendorff_alpha", "Krippendorff's alpha", "chance-corrected; the one to read"),
            ("cohen_kappa_mean", "Cohen's kappa (mean of pairs)", ""),
            ("fleiss_kappa", "Fleiss' kappa", ""),
        )
        if key in stats
    ]
    out["counts"] = (
        f"{a['n_labels']} labels on {a['n_items']} items by {a['n_annotators']} annotators"
        if {"n_labels", "n_items", "n_annotators"} <= a.keys()
        else None
    )
    out["gate"] = _gate(a.get("calibration_gate"), st.get("gate"))
    # The store's drift alerts measure from calibration time; the CLI's from the first window.
    alerts = st.get("drift_alerts") if "drift_alerts" in st else a.get("drift_alerts") or []
    out["annotators"] = _annotators(a, st, alerts)
    out["alerts"] = [
        {
            "annotator": x.get("annotator", "?"),
            # windows count from 0 in the JSON, from 1 on the plot's axis
            "window": x["window"] + 1 if isinstance(x.get("window"), int) else None,
            "reason": x.get("reason"),
        }
        for x in alerts
    ]
    out["disputed"] = _disputed(st.get("disputed_items"), (a.get("calibration_gate") or {}))
    panel = inp.panel or {}
    out["simulated"] = bool(panel.get("simulated")) or (
        bool(out["annotators"])
        and all(r["name"].startswith(SIMULATED_PREFIX) for r in out["annotators"])
    )
    out["panel"] = [_panel_member(p) for p in panel.get("annotators") or []]
    progress = st.get("progress") or {}
    out["progress"] = [
        {"name": k.replace("_", " "), "value": pct(v) if k.startswith("fraction") else num(v)}
        for k, v in progress.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    ]
    series = a.get("anchor_accuracy_over_time") or {}
    threshold = inp.project.spec.annotation.anchor_accuracy_threshold if inp.project else None
    out["anchor_plot"] = plots.anchor_accuracy(series, threshold) if series else None
    return out


def _annotators(a: dict, st: dict, alerts: list[dict]) -> list[dict[str, Any]]:
    """One row per annotator (admins only if they labelled): from the agreement summary, or
    else the store's status; flagged by a drift alert, left out of the export, or removed
    from the round (`rlhfkit annotate remove`)."""
    flagged = {x.get("annotator") for x in alerts}
    store_rows = {r.get("annotator"): r for r in st.get("annotators", [])}
    excluded = {n for n, r in store_rows.items() if r.get("excluded_from_export")}
    removed = {n: r["removed"] for n, r in store_rows.items() if r.get("removed")}
    return [
        {
            "name": r.get("annotator", "?"),
            "labels": num(r.get("labels")),
            "majority": pct(r.get("majority_agreement")),
            "anchor": pct(r.get("anchor_accuracy")),
            "first": pct(r.get("chose_first_rate")),
            "tie": pct(r.get("tie_rate")),
            "both_bad": pct(r.get("both_bad_rate")),
            "flagged": r.get("annotator") in flagged | excluded | set(removed),
            "excluded": r.get("annotator") in excluded | set(removed),
            "removed": (
                f"removed by {removed[r['annotator']].get('by')}: "
                f"{removed[r['annotator']].get('reason')}"
                if r.get("annotator") in removed
                else None
            ),
        }
        for r in a.get("annotators") or st.get("annotators") or []
        if not (r.get("admin") or store_rows.get(r.get("annotator"), {}).get("admin"))
        or r.get("labels")
    ]


def _panel_member(p: dict[str, Any]) -> dict[str, str]:
    """A simulated annotator's set noise and biases (the demo's panel.json)."""
    return {
        "name": p.get("name", "?"),
        "noise": pct(p.get("noise")),
        "position_bias": pct(p.get("position_bias")),
        "length_bias": num(p.get("length_bias"), 2),
        "drift": f"noise → {pct(p.get('drift_noise'))} after {p['drift_after']} labels"
        if p.get("drift_after") is not None
        else "—",
    }


def _gate(computed: dict[str, Any] | None, store: dict[str, Any] | None) -> dict[str, Any] | None:
    """The calibration gate: the store's deciding round (which is what opened or kept closed
    the main queue, and carries any admin override), or, without a store's status, the
    agreement CLI's, which is the same number when its labels file marks the gate's labels
    (an export's does)."""
    value = threshold = passed = override = where = None
    if store:
        threshold = store.get("threshold")
        if "value" in store:  # a status that names the deciding round
            value, passed = store.get("value"), store.get("passed")
            if store.get("round") is not None:
                where = (
                    f"round {store['round']}: {store.get('pairs')} pairs, "
                    f"{store.get('annotators')} annotators"
                )
        else:  # an older status: its latest evaluated round
            rounds = [r for r in store.get("rounds", []) if r.get("passed") is not None]
            if rounds:
                value, passed = rounds[-1].get("percent_agreement"), rounds[-1].get("passed")
        overrides = [r["override"] for r in store.get("rounds", []) if r.get("override")]
        override = overrides[-1] if overrides else None
    if not store and computed:  # the store's status decides when there is one
        value, passed = computed.get("value"), computed.get("passed")
        threshold = threshold if threshold is not None else computed.get("threshold")
        where = (
            f"{computed.get('items')} calibration pairs, {computed.get('annotators')} annotators"
            if computed.get("scope") == "calibration round"
            else f"all labels ({computed.get('items')} items): not a store's gate"
        )
    if value is None and override is None:
        return None
    if passed:
        verdict = "passed"
    elif override:
        verdict = "failed, overridden by an admin"
    elif passed is None:
        verdict = "not evaluated yet"
    else:
        verdict = "failed: the main queue stayed closed"
    return {
        "statistic": "percent agreement",
        "value": pct(value, 1),
        "threshold": pct(threshold, 0),
        "passed": bool(passed),
        "verdict": verdict,
        "override": override,
        "on": where,
    }


def _disputed(store: list | None, computed: dict[str, Any]) -> list[dict[str, str]]:
    """The five items annotators agreed on least: from the store (with the votes) or else
    from the agreement summary."""
    if store:
        return [
            {
                "item": str(d.get("item")),
                "agreement": pct(d.get("agreement")),
                "votes": ", ".join(f"{k} {v}" for k, v in (d.get("votes") or {}).items()),
            }
            for d in store[:5]
        ]
    return [
        {"item": str(i), "agreement": pct(v), "votes": ""}
        for i, v in (computed.get("disputed_items") or [])[:5]
    ]


def rm_section(inp: RunInputs) -> dict[str, Any]:
    """From `rlhfkit eval rm --json` (`rlhfkit.evaluate.schema.RMEvalResult`)."""
    r = inp.rm_eval
    if r is None:
        return {
            "ran": False,
            "missing": "no reward-model evaluation (`rlhfkit eval rm --json` → rm/eval_rm.json)",
        }
    bins = [b for b in r.calibration.bins if b.count]
    return {
        "ran": True,
        "pairs": num(r.pairs),
        "accuracy": pct(r.accuracy, 1),
        "accuracy_ci": interval(r.accuracy_ci),
        "slices": [
            {
                "name": f"{column} = {value}",
                "accuracy": pct(v.accuracy, 1),
                "ci": interval(v.ci),
                "pairs": num(v.pairs),
            }
            for column, values in r.slices.items()
            for value, v in values.items()
        ],
        "facts": _rm_facts(r),
        "reliability_plot": plots.reliability_diagram(bins, r.calibration.ece) if bins else None,
    }


def _rm_facts(r: RMEvalResult) -> list[dict[str, str]]:
    """The reward model's checks beyond accuracy, each with what its value means."""
    facts = []
    human = r.human_majority
    if human and human.rm_agreement:
        facts.append(
            {
                "name": "agreement with the annotators' majority",
                "value": pct(human.rm_agreement.accuracy, 1),
                "note": f"on {human.rows_with_majority} pairs with a majority; annotators "
                f"themselves agree with it {pct(human.annotator_agreement_with_majority)} "
                "of the time, the ceiling a reward model can reach",
            }
        )
    length = r.length
    facts.append(
        {
            "name": "correlation of reward with length (Pearson / Spearman)",
            "value": f"{num(length.pearson, 2)} / {num(length.spearman, 2)}",
            "note": "near 0 is good; a strong positive value means it may pay for length",
        }
    )
    rm_longer, people_longer = length.rm_prefers_longer, length.chosen_is_longer
    if rm_longer is not None:
        biased = people_longer is not None and rm_longer - people_longer > 0.15
        facts.append(
            {
                "name": "prefers the longer reply",
                "value": pct(rm_longer),
                "note": f"annotators chose the longer reply {pct(people_longer)} of the time; "
                + (
                    "the reward model favours length well beyond that: a learned length "
                    "bias that PPO can exploit"
                    if biased
                    else "no sign that the reward model pays for length beyond that"
                ),
            }
        )
    order, cal = r.order_invariance, r.calibration
    facts.append(
        {
            "name": "order invariance (largest reward change when the pair is swapped)",
            "value": num(order.max_abs_diff, 4),
            "note": f"{order.flipped} pairs changed their verdict; should be 0",
        }
    )
    facts.append(
        {
            "name": "expected calibration error (ECE) / Brier score",
            "value": f"{num(cal.ece)} / {num(cal.brier)}",
            "note": "ECE 0 is perfectly calibrated: when it is 80% sure, it is right 80% "
            "of the time",
        }
    )
    return facts


def training_section(runs: list[TrainingRun]) -> dict[str, Any]:
    if not runs:
        return {"ran": False, "missing": "no training logs (RUN_DIR/<stage>/metrics.jsonl)"}
    out = []
    for run in runs:
        kind = run.kind
        last = run.records[-1] if run.records else {}
        first = run.records[0] if run.records else {}
        keys = [k for k in plots.CURVES.get(kind, ("loss",)) if k in last]
        out.append(
            {
                "name": run.name,
                "kind": kind.upper(),
                "steps": len(run.records),
                "plot": plots.training_curves(kind, run.records),
                "table": [
                    {
                        "metric": plots.TITLES.get(k, k),
                        "first": metric(first.get(k)),
                        "last": metric(last.get(k)),
                    }
                    for k in keys
                ],
                "base": (run.manifest or {}).get("base_model")
                or ((run.manifest or {}).get("config") or {}).get("model"),
                "live": outcome.live_monitors(run.monitors),
            }
        )
    return {"ran": True, "runs": out}


VERDICT_TEXT = {
    "improved": "moved the way it should, beyond what chance explains",
    "regressed": "moved the wrong way, beyond what chance explains",
    "no significant change": "no change that chance cannot explain",
}


def eval_section(ev: PolicyEval) -> dict[str, Any]:
    """One `eval policy` result (`rlhfkit.evaluate.schema.PolicyEvalResult`) as rows and
    sentences."""
    d = ev.data
    criteria = [_criterion(c) for c in d.criteria]
    kl = d.kl
    return {
        "name": ev.name,
        "before_model": d.models.before,
        "after_model": d.models.after,
        "prompts": num(d.settings.n_prompts),
        "samples_per_prompt": num(d.settings.samples_per_prompt),
        "test": d.settings.test,
        "criteria": criteria,
        "plot": plots.before_after(criteria),
        "wins": [
            {
                "judge": w.judge,
                "rate": pct(w.win_rate, 1),
                "ci": interval(w.ci),
                "p": pvalue(w.p_value),
                "counts": " / ".join(str(n) for n in (w.wins, w.losses, w.ties, w.both_bad)),
            }
            for w in d.win_rates
        ],
        "flags": [
            {
                "name": f.name,
                "flagged": f.flagged,
                "value": num(f.value),
                "reference": num(f.reference),
                "threshold": num(f.threshold),
                "explanation": f.explanation,
            }
            for f in d.monitors
        ],
        "kl": num(kl.value),
        "kl_ci": interval(kl.ci, num),
        "kl_note": kl.reason
        or (f"{num(kl.per_token, 4)} nats per token" if kl.per_token is not None else ""),
        "length": _means(d.length, 1),
        "reward": _means(d.reward, 3) if d.reward else None,
        "criteria_changed": d.freeze.message if d.freeze.changed else None,
    }


def _criterion(c: CriterionResult) -> dict[str, Any]:
    before, after = c.before, c.after
    return {
        "name": c.name,
        "direction": c.direction,
        "before": before.rate,
        "after": after.rate,
        "before_ci": before.ci,
        "after_ci": after.ci,
        "before_text": pct(before.rate),
        "after_text": pct(after.rate),
        "before_ci_text": interval(before.ci),
        "after_ci_text": interval(after.ci),
        "diff": signed_pct(c.diff),
        "diff_ci": interval(c.diff_ci, signed_pct),
        "p": pvalue(c.p_value),
        "verdict": c.verdict,
        "meaning": VERDICT_TEXT.get(c.verdict, ""),
    }


def _means(c: LengthResult | RewardResult, digits: int) -> dict[str, str]:
    """A before/after comparison of means (length, reward) as text."""
    return {
        "before": num(c.before.mean, digits),
        "after": num(c.after.mean, digits),
        "diff": f"{c.diff:+.{digits}f}" if isinstance(c.diff, int | float) else "n/a",
        "diff_ci": interval(c.diff_ci, lambda x: num(x, digits)),
        "p": pvalue(c.p_value),
    }


WINNER_TEXT = {
    "after": "after is better",
    "before": "before is better",
    "tie": "a tie",
    "both_bad": "both bad",
}


def samples_section(ev: PolicyEval, limit: int) -> dict[str, Any]:
    """Before/after replies to the same held-out prompts, the first sample of each, with
    which success criteria each passed and what the judges said."""
    rows = [r for r in ev.samples if r.get("sample", 0) == 0]
    direction = {c.name: c.direction for c in ev.data.criteria}
    out = []
    for r in rows[:limit]:
        marks = r.get("criteria") or {}
        judges = r.get("judges") or {}

        def shows(side: str, wanted: bool, marks=marks) -> list[str]:
            """Criteria this reply matches, split into wanted (an 'increase' criterion) and
            unwanted ('decrease') behaviours."""
            return [
                n
                for n, v in marks.items()
                if (v or {}).get(side) and (direction.get(n) != "decrease") == wanted
            ]

        out.append(
            {
                "prompt": _text(r.get("prompt")),
                "before": _text(r.get("before")),
                "after": _text(r.get("after")),
                "before_good": shows("before", True),
                "before_bad": shows("before", False),
                "after_good": shows("after", True),
                "after_bad": shows("after", False),
                "judges": [
                    {"judge": name, "says": WINNER_TEXT.get((v or {}).get("winner"), "?")}
                    for name, v in judges.items()
                ],
            }
        )
    return {"name": ev.name, "rows": out, "total": len(rows)}


def _text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, list):
        # a conversation: the system prompt is the same everywhere and says nothing here;
        # roles are shown only when there is more than one turn left
        turns = [m for m in v if not (isinstance(m, dict) and m.get("role") == "system")]
        if len(turns) == 1 and isinstance(turns[0], dict):
            return str(turns[0].get("content", ""))
        return "\n\n".join(
            f"[{m.get('role', '?')}] {m.get('content', '')}" if isinstance(m, dict) else str(m)
            for m in turns
        )
    return str(v)


def build(inp: RunInputs, samples: int = 12) -> dict[str, Any]:
    """Everything both renderers need."""
    src = inp.sources
    annotation = _guard(annotation_section, [src.get("agreement"), src.get("status")], inp)
    rm = _guard(rm_section, [src.get("rm eval")], inp)
    evals = [_guard(eval_section, [ev.path], ev) for ev in inp.evals]
    training = training_section(inp.training)
    return {
        "outcome": outcome.outcomes(evals, training.get("runs", [])),
        "overview": overview(inp, annotation, rm),
        "task": task_section(inp),
        "annotation": annotation,
        "rm": rm,
        "training": training,
        "evals": evals,
        "samples": [
            _guard(samples_section, [ev.samples_path], ev, samples)
            for ev in inp.evals
            if ev.samples
        ],
        "sources": [{"what": k, "path": str(v)} for k, v in src.items()],
        "doctor": doctor_section(inp.run_dir),
    }


def _guard(fn, paths: list[Path | None], *args: Any) -> Any:
    """A section built from a file of the wrong shape names the file (`wrong_shape`)."""
    try:
        return fn(*args)
    except (KeyError, TypeError, AttributeError, ValueError, IndexError) as e:
        raise wrong_shape(paths, e) from None
