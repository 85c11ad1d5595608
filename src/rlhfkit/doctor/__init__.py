"""The stage doctor: the seed's failure modes, each checked on a run's files and given a
verdict (ok / warn / fail / not yet measurable), its evidence and what to do.

After the candidates: the trained model never shows a target behavior; pairs too alike to
decide. After annotation: many ties; the calibration gate failing, and who drives it. After
the reward model: near chance on held-out or same-model pairs; mostly length. After each
policy's evaluation: reward up while the criteria stay flat or move the wrong way; KL too
low or too high; over-refusal. `rlhfkit doctor RUN_DIR` runs them all; `rlhfkit run` after
each stage, stopping before people label when the candidates fail.

Modules: `verdict` (a check's outcome, light enough for the CLI to import), `diagnose`
(every check on a `RunFiles`), one module per stage's checks, `record` (doctor.json).
"""
