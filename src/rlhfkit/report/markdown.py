"""The report's short Markdown summary: the headline numbers, for a chat message or a PR."""

from __future__ import annotations

import re
from typing import Any

from rlhfkit.report.doctor import doctor_markdown


def _cell(text: Any) -> str:
    """Table-safe: no pipes or newlines breaking the row, no raw HTML rendered by viewers."""
    s = str(text).replace("|", "\\|").replace("\n", " ")
    return s.replace("<", "&lt;").replace(">", "&gt;")


def _prose(text: Any) -> str:
    """Outside a table: only what could open raw HTML (`<` before a letter, `/`, `!` or `?`)
    is escaped, so "p < 0.001" stays readable as plain text."""
    return re.sub(r"<(?=[A-Za-z/!?])", "&lt;", str(text))


def render_markdown(c: dict[str, Any], html_name: str = "report.html") -> str:
    o, t, a, r, tr = c["overview"], c["task"], c["annotation"], c["rm"], c["training"]
    out = [f"# {_cell(o['title'])}: rlhfkit report", "", "## Outcome", ""]
    if c["outcome"]:
        out += [f"- {_prose(v['line'])}" for v in c["outcome"]] + [""]
    else:
        out += ["No trained policy to judge yet: no policy evaluation and no PPO run.", ""]
    if o["task"]:
        out += [_cell(o["task"]), ""]
    if o["simulated"]:
        out += [
            "> The preferences come from rlhfkit's **simulated** annotator panel, not people.",
            "",
        ]
    out += [f"Full report with figures and samples: `{html_name}`.", ""]
    if o["headlines"]:
        out += ["## Other stages at a glance", ""]
        out += [f"- {_cell(line)}" for line in o["headlines"]] + [""]
    out += ["## Task and rubric", ""]
    if t["ran"]:
        out += [
            f"Rubric version {_cell(t['rubric_version'])}: "
            + ", ".join(_cell(x["name"]) for x in t["criteria"])
            + f". Success criteria (hash `{t['criteria_hash']}`): "
            + ", ".join(f"{_cell(x['name'])} ({x['direction']})" for x in t["success_criteria"])
            + ".",
            "",
        ]
    else:
        out += [f"Not run: {t['missing']}.", ""]
    out += ["## Annotation quality", ""]
    if a["ran"]:
        if a.get("gate"):
            g = a["gate"]
            out.append(f"- Calibration gate: {g['value']} vs {g['threshold']}: {g['verdict']}.")
            if g.get("override"):
                out.append(f"- Admin override: {_cell(g['override']['reason'])}")
        for s in a["stats"]:
            out.append(f"- {s['name']}: {s['value']}" + (f" ({s['ci']})" if s["ci"] else ""))
        flagged = [x["name"] for x in a["annotators"] if x["flagged"]]
        out.append(f"- Flagged annotators: {', '.join(map(_cell, flagged)) or 'none'}.")
        out.append("")
    else:
        out += [f"Not run: {a['missing']}.", ""]
    out += ["## Reward model", ""]
    if r["ran"]:
        line = f"- Held-out accuracy {r['accuracy']} on {r['pairs']} pairs"
        out += [line + (f" ({r['accuracy_ci']})." if r["accuracy_ci"] else "."), ""]
    else:
        out += [f"Not run: {r['missing']}.", ""]
    out += ["## Training", ""]
    if tr["ran"]:
        for run in tr["runs"]:
            last = ", ".join(f"{m['metric']} {m['last']}" for m in run["table"])
            out.append(
                f"- {run['kind']} ({_cell(run['name'])}): {run['steps']} steps; last: {last}"
                + _live(run)
            )
        out.append("")
    else:
        out += [f"Not run: {tr['missing']}.", ""]
    out += _evals(c["evals"])
    out += doctor_markdown(c["doctor"])
    return "\n".join(out).rstrip() + "\n"


def _live(run: dict[str, Any]) -> str:
    """A training run's live monitors, appended to its line."""
    live = run["live"]
    if live is None:
        return "; no live monitoring (no monitors.jsonl)" if run["kind"] == "PPO" else ""
    if not live["monitors"]:
        return f"; live monitors: no flag on {live['steps_text']}"
    flags = ", ".join(
        f"{_cell(m['text'])} (steps {m['first']}–{m['last']}: {_cell(m['message'])})"
        for m in live["monitors"]
    )
    return f"; live monitor flags: {flags}"


def _evals(evals: list[dict[str, Any]]) -> list[str]:
    """Each evaluated policy: its criteria table, KL, win rates and hacking flags."""
    out = ["## Success criteria before and after", ""]
    if not evals:
        out += ["Not run: no policy evaluation.", ""]
    for e in evals:
        out += [
            f"### {_cell(e['name'])}",
            "",
            "| criterion | should | before | after | change | p | verdict |",
            "|---|---|---|---|---|---|---|",
        ]
        for x in e["criteria"]:
            out.append(
                f"| {_cell(x['name'])} | {x['direction']} | {x['before_text']} | "
                f"{x['after_text']} | {x['diff']} | {x['p']} | {x['verdict']} |"
            )
        out.append("")
        out.append(f"KL(after ‖ before): {e['kl']}.")
        for w in e["wins"]:
            out.append(f"Win rate by {_cell(w['judge'])}: {w['rate']} ({w['ci']}).")
        fired = [f for f in e["flags"] if f["flagged"]]
        if fired:
            out += ["", "Hacking flags:"] + [
                f"- **{_cell(f['name'])}**: {_cell(f['explanation'])}" for f in fired
            ]
        else:
            out.append("No hacking flag fired.")
        out.append("")
    return out
