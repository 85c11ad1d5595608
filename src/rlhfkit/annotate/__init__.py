"""The annotation app: pairwise preference collection with calibration, a gate and anchors.

The Python API (every CLI command is one of these calls):

    from rlhfkit.annotate import (
        Policy, open_store, import_items, add_annotator, status, export, override_gate,
        remove_annotator, recalibrate,
    )
    from rlhfkit.annotate.server import serve_in_background

    store = open_store("sqlite:///PROJECT/artifacts/annotations.sqlite", create=True)
    policy = Policy.from_project(load_project("PROJECT"))    # rubric + [annotation] settings
    import_items(store, policy, items="candidates.jsonl", anchors="anchors.jsonl")
    token = add_annotator(store, "ana")                       # printed once; a hash is stored
    with serve_in_background(store.url, "PROJECT") as base_url:
        ...  # GET {base_url}/api/tasks/next, POST {base_url}/api/labels with the bearer token
    status(store, policy)                                     # dict: progress, gate, agreement
    # a failed gate: status(...)["gate"]["disagreement"] says who drives it and what to do
    remove_annotator(store, policy, "ana", "reason", actor="lead")  # the gate is re-evaluated
    recalibrate(store, policy, same_items=True, reason="rubric v2", actor="lead")  # new round
    override_gate(store, "reason", actor="lead")              # recorded; shown in exports
    export(store, policy, "prefs.jsonl", labels_out="labels.jsonl", gold_out="gold.jsonl")

Modules: `models` (tables), `store` (connections, schema check and migration),
`scheduling` (who labels what), `rounds` (calibration rounds and the gate), `gate_status`
(the gate as status shows it), `importing`, `status`, `export`, `security`, and the web
app in `app`, `routes/`, `server`, `templates/`, `static/`. FastAPI is imported only by
the web modules.
"""

from rlhfkit.annotate.annotators import add_annotator, remove_annotator
from rlhfkit.annotate.export import ExportResult, export
from rlhfkit.annotate.importing import ImportResult, import_items
from rlhfkit.annotate.rounds import override_gate, recalibrate
from rlhfkit.annotate.rules import Policy
from rlhfkit.annotate.status import status
from rlhfkit.annotate.store import Store, open_store

__all__ = [
    "ExportResult",
    "ImportResult",
    "Policy",
    "Store",
    "add_annotator",
    "export",
    "import_items",
    "open_store",
    "override_gate",
    "recalibrate",
    "remove_annotator",
    "status",
]
