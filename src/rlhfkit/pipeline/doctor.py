"""The stage doctor in `rlhfkit run`: after each stage, every check on the run folder (see
`rlhfkit.doctor`), the finished stage's verdicts shown, and doctor.json written.

After the candidates, a failed check stops the run before people label (with a simulated
labeler nothing is paid for, so the run goes on with the failure shown): the pairs would
waste their time. `--ignore-doctor` goes on anyway, and doctor.json records who did, when,
and past which checks; a later run over the same candidates does not stop again.
"""

from __future__ import annotations

import getpass
import time
from pathlib import Path

from rlhfkit.doctor.diagnose import RunFiles, Settings, diagnose
from rlhfkit.doctor.record import DOCTOR_FILE, read_record, write_record
from rlhfkit.doctor.verdict import Check
from rlhfkit.lineage import sha256_file
from rlhfkit.pipeline.layout import RunPaths
from rlhfkit.project import Project

STAGE_CHECKS = {"candidates": "candidates", "annotate": "annotate", "rm": "rm"}
"""A run stage -> the doctor's stage whose checks it makes measurable (and eval_<policy>)."""


def run_files(paths: RunPaths, policies: list[str] | tuple[str, ...] = ("ppo", "dpo")) -> RunFiles:
    """The files the doctor reads, where `rlhfkit run` writes them."""
    return RunFiles(
        candidates=paths.candidates,
        labels=paths.annotation / "labels.jsonl",
        status=paths.annotation / "status.json",
        rm_eval=paths.rm / "eval_rm.json",
        evals={p: paths.eval(p) for p in policies},
        metrics={p: paths.policy(p) / "metrics.jsonl" for p in policies},
    )


def diagnose_run(paths: RunPaths, project: Project | None) -> list[Check]:
    """Every check on the run folder, with the project's criteria and policies."""
    if project is None:
        return diagnose(run_files(paths), Settings())
    spec = project.spec
    policies = list(spec.run.policies)
    settings = Settings(spec.success_criteria, spec.monitors.kl_max)
    return diagnose(run_files(paths, policies), settings, policies)


def made_measurable(checks: list[Check], stage: str) -> list[Check]:
    """The checks whose inputs `stage` (a run stage's name) wrote."""
    if stage.startswith("eval_"):
        policy = stage.removeprefix("eval_")
        return [c for c in checks if c.stage == "eval" and c.name.endswith(f":{policy}")]
    wanted = STAGE_CHECKS.get(stage)
    return [c for c in checks if c.stage == wanted]


def after_stage(
    paths: RunPaths, project: Project, stage: str, people_next: bool, ignore: bool
) -> tuple[list[Check], str | None]:
    """Diagnose after `stage`, write doctor.json; the stage's checks, and why the run stops
    (None when it goes on). `people_next`: people label in a stage this run goes on to."""
    checks = diagnose_run(paths, project)
    record_path = paths.root / DOCTOR_FILE
    overrides = read_record(record_path).get("overrides", [])
    mine = made_measurable(checks, stage)
    failed = [c.name for c in mine if c.verdict == "fail"]
    stop = None
    if stage == "candidates" and failed and people_next and not _labelling(paths):
        digest = sha256_file(paths.candidates)
        if not any(o.get("candidates_sha256") == digest for o in overrides):
            if ignore:
                overrides.append(_override(stage, digest, failed))
            else:
                stop = _stop_message(paths, failed)
    write_record(record_path, checks, overrides)
    return mine, stop


def _labelling(paths: RunPaths) -> bool:
    """People already have these pairs: stopping now would help no one."""
    return (paths.annotation / "imported.json").exists()


def _override(stage: str, digest: str, failed: list[str]) -> dict:
    try:
        who = getpass.getuser()
    except (KeyError, OSError):  # no login name in this environment
        who = "unknown"
    return {
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "by": who,
        "stage": stage,
        "candidates_sha256": digest,
        "failed": failed,
    }


def _stop_message(paths: RunPaths, failed: list[str]) -> str:
    where = Path(paths.root / DOCTOR_FILE)
    return (
        f"The doctor stopped the run before people label: {', '.join(failed)} failed "
        f"(details above and in {where.name}). Fix what it says and run again, or label "
        "these pairs anyway with `rlhfkit run --ignore-doctor` (recorded there)."
    )
