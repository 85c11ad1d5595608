"""The report's content as plain data: one dict per section, shared by the HTML and the
Markdown renderers. Every number is formatted here once, and every plain-language sentence
(what a verdict or a flag means for the client) is written here once.

A section whose inputs are missing has ``ran: False`` and a ``missing`` sentence saying which
command produces them; the renderers print "not run" for it.
"""

from __future__ import annotations

import math
import time
from typing import Any

from rlhfkit import __version__
from rlhfkit.report import plots
from rlhfkit.report.inputs import PolicyEval, RunInputs, TrainingRun

SIMULATED_PREFIX = "sim-"


# --- formatting -------------------------------------------------------------------------------


def num(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def pct(x: Any, digits: int = 0) -> str:
    if not isinstance(x, int | float) or isinstance(x, bool) or not math.isfinite(x):
        return "n/a"
    return f"{100 * x:.{digits}f}%"


def interval(ci: Any, fmt=pct) -> str:
    if not isinstance(ci, list | tuple) or len(ci) != 2 or None in ci:
        return ""
    return f"{fmt(ci[0])} – {fmt(ci[1])}"


def pvalue(p: Any) -> str:
    if not isinstance(p, int | float) or not math.isfinite(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def signed_pct(x: Any) -> str:
    if not isinstance(x, int | float) or not math.isfinite(x):
        return "n/a"
    return f"{100 * x:+.0f} pts"


def _rate(v: Any) -> tuple[float | None, list | None]:
    """A rate given as a number or as ``{"rate"|"value": x, "ci": [lo, hi]}``."""
    if isinstance(v, dict):
        return v.get("rate", v.get("value", v.get("mean"))), v.get("ci")
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v), None
    return None, None


def _named(container: Any) -> list[dict[str, Any]]:
    """A list of dicts with 'name', from either a list or a {name: dict} mapping."""
    if isinstance(container, dict):
        return [{"name": k, **v} for k, v in container.items() if isinstance(v, dict)]
    if isinstance(container, list):
        return [x for x in container if isinstance(x, dict)]
    return []


# --- sections ---------------------------------------------------------------------------------


def overview(inp: RunInputs, evals: list[dict[str, Any]], annotation: dict, rm: dict) -> dict:
    """The first screen: what was taught, and in one line each whether it worked."""
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
    for ev in evals:
        improved = [c["name"] for c in ev["criteria"] if c["verdict"] == "improved"]
        regressed = [c["name"] for c in ev["criteria"] if c["verdict"] == "regressed"]
        fired = [f["name"] for f in ev["flags"] if f["flagged"]]
        parts = [
            f"improved: {', '.join(improved)}" if improved else "no criterion improved",
        ]
        if regressed:
            parts.append(f"regressed: {', '.join(regressed)}")
        parts.append(
            f"{len(fired)} hacking flag{'s' if len(fired) != 1 else ''}"
            + (f" ({', '.join(fired)})" if fired else "")
        )
        lines.append(f"Policy {ev['name']}: " + "; ".join(parts) + ".")
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
    a, st = inp.agreement, inp.status
    if a is None and st is None:
        return {
            "ran": False,
            "missing": "no agreement summary (`rlhfkit agreement LABELS --json` → "
            "annotation/agreement.json) or annotation status (annotation/status.json)",
        }
    out: dict[str, Any] = {"ran": True, "stats": [], "annotators": [], "alerts": []}
    a = a or {}
    ci = a.get("ci", {})
    for key, label, note in (
        (
            "percent_agreement",
            "percent agreement",
            "the gate's statistic (65% floor, 70–75% target)",
        ),
        ("krippendorff_alpha", "Krippendorff's alpha", "chance-corrected; the one to read"),
        ("cohen_kappa_mean", "Cohen's kappa (mean of pairs)", ""),
        ("fleiss_kappa", "Fleiss' kappa", a.get("fleiss_kappa_note") or ""),
    ):
        if key in a:
            note = a.get(f"{key}_note") or note
            out["stats"].append(
                {
                    "name": label,
                    "value": num(a[key]),
                    "ci": interval(ci.get(key), num),
                    "note": note,
                }
            )
    out["counts"] = (
        f"{a['n_labels']} labels on {a['n_items']} items by {a['n_annotators']} annotators"
        if {"n_labels", "n_items", "n_annotators"} <= a.keys()
        else None
    )
    gate = dict(a.get("calibration_gate") or {})
    gate |= _status_gate(st)
    if gate:
        passed, override = gate.get("passed"), gate.get("override")
        if passed:
            verdict = "passed"
        elif override:
            verdict = "failed, overridden by an admin"
        elif passed is None:
            verdict = "not evaluated yet"
        else:
            verdict = "failed: the main queue stayed closed"
        out["gate"] = {
            "statistic": gate.get("statistic", "percent_agreement").replace("_", " "),
            "value": pct(gate.get("value"), 1),
            "threshold": pct(gate.get("threshold"), 0),
            "passed": bool(passed),
            "verdict": verdict,
            "override": override,
            "disputed": [
                {"item": str(i), "agreement": pct(v)} for i, v in gate.get("disputed_items", [])[:5]
            ],
        }
    alerts = a.get("drift_alerts") or (st or {}).get("drift_alerts") or []
    flagged = {x.get("annotator") for x in alerts}
    threshold = (st or {}).get("anchor_accuracy_threshold")
    for s in a.get("annotators") or (st or {}).get("annotators") or []:
        low = (
            threshold is not None
            and isinstance(s.get("anchor_accuracy"), int | float)
            and s["anchor_accuracy"] < threshold
        )
        out["annotators"].append(
            {
                "name": s.get("annotator", s.get("name", "?")),
                "labels": num(s.get("labels")),
                "majority": pct(s.get("majority_agreement")),
                "anchor": pct(s.get("anchor_accuracy")),
                "first": pct(s.get("chose_first_rate")),
                "tie": pct(s.get("tie_rate")),
                "both_bad": pct(s.get("both_bad_rate")),
                "flagged": s.get("annotator", s.get("name")) in flagged or low,
            }
        )
    out["alerts"] = [
        {
            "annotator": x.get("annotator", "?"),
            "window": x.get("window"),
            "reason": x.get("reason", ""),
        }
        for x in alerts
    ]
    out["simulated"] = bool(out["annotators"]) and all(
        r["name"].startswith(SIMULATED_PREFIX) for r in out["annotators"]
    )
    out["progress"] = _progress(st)
    series = a.get("anchor_accuracy_over_time") or {}
    out["anchor_plot"] = plots.anchor_accuracy(series, threshold) if series else None
    return out


def _status_gate(st: dict[str, Any] | None) -> dict[str, Any]:
    """The gate as `annotate status --json` records it, with any admin override."""
    if not st:
        return {}
    gate = st.get("gate") or st.get("calibration_gate") or {}
    if not isinstance(gate, dict):
        return {}
    out = {k: gate[k] for k in ("passed", "value", "threshold", "statistic") if k in gate}
    reason = gate.get("override_reason") or (gate.get("override") or {}).get("reason")
    if reason:
        by = gate.get("override_by") or (gate.get("override") or {}).get("by")
        out["override"] = {"reason": reason, "by": by}
    return out


def _progress(st: dict[str, Any] | None) -> list[dict[str, str]]:
    if not st:
        return []
    rows = []
    for key, value in st.items():
        if isinstance(value, int | float | str) and not isinstance(value, bool):
            rows.append({"name": key.replace("_", " "), "value": num(value)})
    return rows


def rm_section(inp: RunInputs) -> dict[str, Any]:
    r = inp.rm_eval
    if r is None:
        return {
            "ran": False,
            "missing": "no reward-model evaluation (`rlhfkit eval rm --json` → rm/eval_rm.json)",
        }
    acc, acc_ci = _rate(r.get("accuracy"))
    out: dict[str, Any] = {
        "ran": True,
        "pairs": num(r.get("pairs")),
        "accuracy": pct(acc, 1),
        "accuracy_ci": interval(r.get("accuracy_ci") or acc_ci),
        "slices": [],
    }
    for s in _named(r.get("slices") or r.get("per_slice")):
        v, c = _rate(s.get("accuracy"))
        out["slices"].append(
            {
                "name": s.get("name", "?"),
                "accuracy": pct(v, 1),
                "ci": interval(s.get("ci") or c),
                "pairs": num(s.get("pairs", s.get("n"))),
            }
        )
    cal = r.get("calibration") or {}
    ece = cal.get("ece", r.get("ece"))
    bins = cal.get("bins") or r.get("reliability") or []
    out["ece"] = num(ece)
    out["reliability_plot"] = plots.reliability_diagram(bins, ece) if bins else None
    facts = []
    for key, label, explain in (
        ("majority_agreement", "agreement with the annotators' majority", ""),
        (
            "length_correlation",
            "correlation of reward with length",
            "near 0 is good; high means the reward model may simply pay for longer replies",
        ),
        ("order_invariance", "order invariance", "the same pair scored in both orders"),
        ("mean_margin", "mean reward margin (chosen − rejected)", ""),
    ):
        if key in r:
            v = r[key]
            if isinstance(v, dict):
                v = v.get("pearson", v.get("value", v.get("rate")))
            facts.append({"name": label, "value": num(v), "note": explain})
    out["facts"] = facts
    return out


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
                        "first": num(first.get(k)),
                        "last": num(last.get(k)),
                    }
                    for k in keys
                ],
                "base": (run.manifest or {}).get("base_model")
                or ((run.manifest or {}).get("config") or {}).get("model"),
            }
        )
    return {"ran": True, "runs": out}


VERDICT_TEXT = {
    "improved": "moved the way it should, beyond what chance explains",
    "regressed": "moved the wrong way, beyond what chance explains",
    "no significant change": "no change that chance cannot explain",
}


def eval_section(ev: PolicyEval) -> dict[str, Any]:
    """One `eval policy` result (schema ``rlhfkit.eval_policy/1``, see
    `rlhfkit.evaluate.policy`) as rows and sentences."""
    d = ev.data
    criteria = []
    for c in _named(d.get("criteria")):
        before, bci = _rate(c.get("before"))
        after, aci = _rate(c.get("after"))
        diff = c.get("diff")
        criteria.append(
            {
                "name": c.get("name", "?"),
                "direction": c.get("direction"),
                "before": before,
                "after": after,
                "before_ci": bci,
                "after_ci": aci,
                "before_text": pct(before),
                "after_text": pct(after),
                "before_ci_text": interval(bci),
                "after_ci_text": interval(aci),
                "diff": signed_pct(diff),
                "diff_ci": interval(c.get("diff_ci"), signed_pct),
                "p": pvalue(c.get("p_value")),
                "verdict": c.get("verdict", "n/a"),
                "meaning": VERDICT_TEXT.get(c.get("verdict", ""), ""),
            }
        )
    wins = [
        {
            "judge": w.get("judge", w.get("name", "?")),
            "rate": pct(w.get("win_rate"), 1),
            "ci": interval(w.get("ci")),
            "p": pvalue(w.get("p_value")),
            "counts": " / ".join(str(w.get(k, 0)) for k in ("wins", "losses", "ties", "both_bad")),
        }
        for w in _named(d.get("win_rates"))
    ]
    flags = [
        {
            "name": f.get("name", "?"),
            "flagged": bool(f.get("flagged")),
            "value": num(f.get("value")),
            "reference": num(f.get("reference")),
            "threshold": num(f.get("threshold")),
            "explanation": f.get("explanation", ""),
        }
        for f in _named(d.get("monitors"))
    ]
    kl = d.get("kl") or {}
    length = d.get("length") or {}
    reward = d.get("reward") or {}
    freeze = d.get("freeze") or {}
    settings = d.get("settings") or {}
    models = d.get("models") or {}
    return {
        "name": ev.name,
        "before_model": models.get("before"),
        "after_model": models.get("after"),
        "prompts": num(settings.get("n_prompts")),
        "samples_per_prompt": num(settings.get("samples_per_prompt")),
        "test": settings.get("test"),
        "criteria": criteria,
        "plot": plots.before_after(criteria),
        "wins": wins,
        "flags": flags,
        "kl": num(kl.get("value")),
        "kl_ci": interval(kl.get("ci"), num),
        "kl_note": kl.get("reason")
        or (f"{num(kl['per_token'], 4)} nats per token" if kl.get("per_token") is not None else ""),
        "length": _means(length, 1) if length else None,
        "reward": _means(reward, 3) if reward else None,
        "criteria_changed": freeze.get("message") if freeze.get("changed") else None,
    }


def _means(c: dict[str, Any], digits: int) -> dict[str, str]:
    """A before/after comparison of means (length, reward) as text."""
    return {
        "before": num(_rate(c.get("before"))[0], digits),
        "after": num(_rate(c.get("after"))[0], digits),
        "diff": f"{c['diff']:+.{digits}f}" if isinstance(c.get("diff"), int | float) else "n/a",
        "diff_ci": interval(c.get("diff_ci"), lambda x: num(x, digits)),
        "p": pvalue(c.get("p_value")),
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
    direction = {c.get("name"): c.get("direction") for c in _named(ev.data.get("criteria"))}
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
    annotation = annotation_section(inp)
    rm = rm_section(inp)
    evals = [eval_section(ev) for ev in inp.evals]
    return {
        "overview": overview(inp, evals, annotation, rm),
        "task": task_section(inp),
        "annotation": annotation,
        "rm": rm,
        "training": training_section(inp.training),
        "evals": evals,
        "samples": [samples_section(ev, samples) for ev in inp.evals if ev.samples],
        "sources": [{"what": k, "path": str(v)} for k, v in inp.sources.items()],
    }
