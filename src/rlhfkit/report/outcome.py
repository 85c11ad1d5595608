"""The report's first screen: per trained policy, one verdict line — which pre-registered
criteria moved the intended way (significantly), which moved the wrong way, the KL, and every
monitor flag, after the fact (`eval policy`) and live (PPO's monitors.jsonl) — before any
caveat. Built from the sections' plain data (sections.py), so the numbers match the tables.
"""

from __future__ import annotations

from typing import Any

from rlhfkit.report.inputs import STAGE_ORDER, MonitorStep

VERDICT_WORDS = {
    "improved": "improved",
    "regressed": "moved the wrong way",
    "no significant change": "no significant change",
}


def live_monitors(steps: list[MonitorStep] | None) -> dict[str, Any] | None:
    """PPO's live monitors summed up per monitor: on how many of the logged steps it was
    raised, the first and last such step, and its latest explanation. None: no live
    monitoring (no monitors.jsonl)."""
    if steps is None:
        return None
    raised: dict[str, list[tuple[int, str]]] = {}
    for s in steps:
        for f in s.flags:
            if f.get("flagged", True):  # the log holds raised flags only; be sure
                raised.setdefault(f["name"], []).append((s.step, str(f.get("explanation", ""))))
    monitors = [
        {
            "name": name,
            "steps": len(hits),
            "of": len(steps),
            "first": hits[0][0],
            "last": hits[-1][0],
            "message": hits[-1][1],
            "text": f"{name} on {len(hits)} of {_steps(len(steps))}",
        }
        for name, hits in sorted(raised.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    ]
    return {"steps": len(steps), "steps_text": _steps(len(steps)), "monitors": monitors}


def _steps(n: int) -> str:
    return f"{n} step" if n == 1 else f"{n} steps"


def policy_label(name: str) -> str:
    """ppo -> PPO; a folder of another name keeps its name."""
    return name.upper() if name in STAGE_ORDER else name


def outcomes(evals: list[dict[str, Any]], runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One verdict per evaluated policy (its training run's live flags joined by folder
    name), then one per PPO run that was never evaluated. `evals`: `sections.eval_section`
    dicts; `runs`: `sections.training_section`'s runs."""
    by_name = {r["name"]: r for r in runs}
    out = [_evaluated(e, by_name.get(e["name"])) for e in evals]
    evaluated = {e["name"] for e in evals}
    for r in runs:
        if r["kind"] == "PPO" and r["name"] not in evaluated:
            parts = [_part("not evaluated (`rlhfkit eval policy`)", "neutral")]
            parts += _flag_parts([], r.get("live"), r["kind"])
            out.append(_verdict(r["name"], parts))
    return out


def _evaluated(e: dict[str, Any], run: dict[str, Any] | None) -> dict[str, Any]:
    parts = []
    for c in e["criteria"]:
        verdict = c["verdict"]
        parts.append(
            _part(
                f"{c['name']} {c['before_text']} → {c['after_text']} (p {c['p']}) "
                + VERDICT_WORDS.get(verdict, verdict),
                {"improved": "good", "regressed": "bad"}.get(verdict, "neutral"),
            )
        )
    kl = "KL not measured" if e["kl"] == "n/a" else f"KL {e['kl']} nats per reply"
    parts.append(_part(kl, "neutral"))
    fired = [f["name"] for f in e["flags"] if f["flagged"]]
    parts += _flag_parts(fired, (run or {}).get("live"), (run or {}).get("kind"))
    return _verdict(e["name"], parts)


def _flag_parts(fired: list[str], live: dict[str, Any] | None, kind: str | None) -> list[dict]:
    """The monitors' flags after the fact and during training, or that there were none."""
    parts = []
    if fired:
        parts.append(_part("monitor flags after training: " + ", ".join(fired), "bad"))
    if live and live["monitors"]:
        texts = ", ".join(m["text"] for m in live["monitors"])
        parts.append(_part(f"live monitor flags during training: {texts}", "bad"))
    if not parts:
        parts.append(_part("no monitor flags", "good"))
    if live is None and kind == "PPO":
        parts.append(_part("no live monitoring (no monitors.jsonl)", "neutral"))
    return parts


def _part(text: str, cls: str) -> dict[str, str]:
    return {"text": text, "cls": cls}


def _verdict(name: str, parts: list[dict[str, str]]) -> dict[str, Any]:
    label = policy_label(name)
    return {
        "policy": label,
        "parts": parts,
        "line": f"{label}: " + "; ".join(p["text"] for p in parts) + ".",
        "bad": any(p["cls"] == "bad" for p in parts),
    }
