"""The report's Doctor section: the stage doctor's verdicts (RUN_DIR/doctor.json, written by
`rlhfkit run` after each stage and by `rlhfkit doctor`), worst first, with what to do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlhfkit.doctor.record import DOCTOR_FILE, read_record
from rlhfkit.doctor.verdict import MARK, worst_first


def doctor_section(run_dir: Path | None) -> dict[str, Any]:
    record = read_record(run_dir / DOCTOR_FILE) if run_dir is not None else {}
    if not record:
        # not "Not run": the stages ran, only their check is missing (and cheap to make)
        return {"ran": False, "missing": "no doctor.json: `rlhfkit doctor RUN_DIR` checks the run"}
    counts = record["counts"]
    return {
        "ran": True,
        "counts": ", ".join(f"{n} {MARK[v]}" for v, n in counts.items() if n),
        "checks": [
            {
                "mark": MARK[c.verdict],
                "class": {"fail": "bad", "ok": "good"}.get(c.verdict, ""),
                "title": c.title,
                "evidence": c.evidence,
                "action": c.action,
            }
            for c in worst_first(record["checks"])
        ],
        "overrides": [
            f"{o['by']} went on past {', '.join(o['failed'])} at {o['at']} (--ignore-doctor)"
            for o in record.get("overrides", [])
        ],
    }


def doctor_markdown(d: dict[str, Any]) -> list[str]:
    out = ["## Doctor", ""]
    if not d["ran"]:
        return [*out, f"{d['missing']}.", ""]
    out.append(f"{d['counts']}.")
    out += [""] + [f"- Override: {o}" for o in d["overrides"]]
    for c in d["checks"]:
        if c["mark"] in ("FAIL", "WARN"):
            out.append(f"- **{c['mark']}** {c['title']}: {c['evidence']}. {c['action']}")
    return [*out, ""]
