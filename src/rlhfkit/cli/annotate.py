"""`rlhfkit annotate`: the annotation app's store, team and server."""

from __future__ import annotations

import random
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from rlhfkit import strict_json
from rlhfkit.cli.common import console, err_console
from rlhfkit.cli.pilot import pilot
from rlhfkit.errors import UserError, display_path
from rlhfkit.lineage import login_name

app = typer.Typer(
    help="Collect pairwise preferences in a web app: a calibration round and agreement gate "
    "first, anchors with known answers mixed in, k annotators per pair, and an export that "
    "`rlhfkit train rm` / `train dpo` read directly.\n\n"
    "The usual order: pilot (a SIMULATED panel tries the rubric first), import, "
    "add-annotator (one per person), serve, status, export; "
    "revoke or rotate a token when someone leaves or a token leaks. When the gate fails, "
    "status names who drives the disagreement; then remove, recalibrate or override-gate. The "
    "store is PROJECT/artifacts/annotations.sqlite unless --db or RLHFKIT_DB_URL names "
    "another (a SQLite file, or postgresql://user@host/db for a team server).",
    no_args_is_help=True,
)
app.command("pilot")(pilot)  # `rlhfkit annotate pilot`: cli/pilot.py

PROJECT = typer.Option(
    Path("."), "--project", help="Project folder: the rubric and [annotation] settings."
)
DB = typer.Option(
    None,
    "--db",
    help="Store URL or SQLite file (default: $RLHFKIT_DB_URL, else "
    "PROJECT/artifacts/annotations.sqlite).",
)


def _open(project: Path, db: str | None, create: bool = False):
    # lazy: sqlalchemy (the annotate package) and pydantic (project) slow --help
    from rlhfkit.annotate import Policy, open_store
    from rlhfkit.annotate.settings import db_url_for
    from rlhfkit.project import load_project

    proj = load_project(project)
    return open_store(db_url_for(proj.root, db), create=create), Policy.from_project(proj), proj


@app.command("import")
def import_(
    items: Path = typer.Argument(
        None,
        help="Pairs to label: comparison rows (prompt, response_a, response_b, as `rlhfkit "
        "generate` writes them) or preference rows (relabeled from scratch). Default: "
        "PROJECT/artifacts/candidates.jsonl when no --anchors is given.",
    ),
    anchors: Path = typer.Option(
        None,
        help="Anchor pairs with a known answer: comparison rows with 'label' (A, B, tie or "
        "both_bad, as in `rlhfkit agreement --anchors` gold files), or preference rows "
        "(chosen is the answer).",
    ),
    seed: int = typer.Option(0, help="Seed for drawing the first calibration round."),
    project: Path = PROJECT,
    db: str = DB,
) -> None:
    """Import pairs (and anchors) into the store, all or nothing.

    Every row is checked first; any bad row fails the import with FILE:LINE: reason and
    nothing is written. Rows already imported (same id, same content) are skipped, so the
    same file can be imported again. The first import of pairs draws the calibration round
    ([annotation] calibration_size items every annotator labels first)."""
    # lazy: sqlalchemy (the annotate package) and pydantic (project) slow --help
    from rlhfkit.annotate import Policy
    from rlhfkit.annotate.importing import import_rows, read_import
    from rlhfkit.project import load_project

    proj = load_project(project)
    if items is None and anchors is None:
        items = proj.artifacts("candidates.jsonl")
        if not items.exists():
            raise UserError(
                f"{display_path(items)}: no such file; give the pairs to import",
                hint="sample some with `rlhfkit generate --project DIR`",
            )
    # Every row is checked before the store is touched: a bad file leaves nothing behind.
    batch = read_import(Policy.from_project(proj), items, anchors)
    store, policy, _ = _open(project, db, create=True)
    try:
        result = import_rows(store, policy, batch, actor=login_name(), seed=seed)
    finally:
        store.close()
    parts = [f"{result.items} pairs", f"{result.anchors} anchors"]
    if result.skipped:
        parts.append(f"{result.skipped} already imported")
    console.print(f"imported {', '.join(parts)} into {_where(store.url)}")
    if result.calibration_round:
        console.print(
            f"calibration round {result.calibration_round}: {result.calibration_items} pairs "
            "that every annotator labels first"
        )


@app.command("add-annotator")
def add_annotator(
    name: str = typer.Argument(..., help="A name for the person (letters, digits, _ . @ -)."),
    admin: bool = typer.Option(
        False, "--admin", help="May see the dashboard and override the calibration gate."
    ),
    project: Path = PROJECT,
    db: str = DB,
) -> None:
    """Add an annotator and print their login token, once.

    Only a hash of the token is stored: copy it now and give it to the person privately.
    The token goes to standard output alone (TOKEN=$(rlhfkit annotate add-annotator ana))."""
    # lazy: the annotate package imports sqlalchemy, slow for --help
    from rlhfkit.annotate import add_annotator as add

    store, _, _ = _open(project, db, create=True)
    try:
        token = add(store, name, admin=admin)
    finally:
        store.close()
    role = "admin" if admin else "annotator"
    err_console.print(f"{role} {name} added; their token (shown once, only a hash is stored):")
    print(token)


@app.command()
def revoke(
    name: str = typer.Argument(..., help="The annotator whose token to revoke."),
    project: Path = PROJECT,
    db: str = DB,
) -> None:
    """Revoke an annotator's token (someone left the team, a token leaked).

    The token is refused from its next request on, an open page session too; their open
    tasks return to the pool; their labels stay. Recorded with the time: shown by status and
    in the export's manifest."""
    # lazy: the annotate package imports sqlalchemy, slow for --help
    from rlhfkit.annotate.annotators import revoke_annotator, utc

    store, _, _ = _open(project, db)
    try:
        r = revoke_annotator(store, name)
    finally:
        store.close()
    tasks = f"{r.released} open task{'' if r.released == 1 else 's'} released to the pool"
    console.print(f"{name}'s token revoked at {utc(r.at)}; {tasks}; their {r.labels} labels stay")


@app.command()
def rotate(
    name: str = typer.Argument(..., help="The annotator who gets a new token."),
    project: Path = PROJECT,
    db: str = DB,
) -> None:
    """Give an annotator a new token and print it, once; the old one is refused at once.

    Their open task and labels stay. The token goes to standard output alone
    (TOKEN=$(rlhfkit annotate rotate ana)). Recorded, like revoke."""
    # lazy: the annotate package imports sqlalchemy, slow for --help
    from rlhfkit.annotate.annotators import rotate_token

    store, _, _ = _open(project, db)
    try:
        token = rotate_token(store, name)
    finally:
        store.close()
    err_console.print(
        f"{name}'s token rotated: the old one is refused from now on. The new one (shown "
        "once, only a hash is stored):"
    )
    print(token)


@app.command()
def serve(
    host: str = typer.Option(
        "127.0.0.1",
        help="Address to listen on. Loopback by default; anything else is reachable from "
        "the network (put a TLS proxy in front).",
    ),
    port: int = typer.Option(8765, help="Port to listen on."),
    task_timeout: float = typer.Option(
        1800.0, help="Seconds before an unlabeled task returns to the pool."
    ),
    project: Path = PROJECT,
    db: str = DB,
) -> None:
    """Run the annotation web app until Ctrl+C.

    Annotators log in at http://HOST:PORT/ with their token; admins also get the dashboard
    at /admin. Scripts use the JSON API with Authorization: Bearer TOKEN:
    GET /api/tasks/next, POST /api/labels, GET /api/me, GET /api/admin/status."""
    # lazy: sqlalchemy (the annotate package) and pydantic (project) slow --help
    from rlhfkit.annotate.server import serve as run
    from rlhfkit.annotate.settings import ServerSettings, db_url_for
    from rlhfkit.project import load_project

    proj = load_project(project)
    settings = ServerSettings(
        db_url=db_url_for(proj.root, db),
        project=proj.root,
        host=host,
        port=port,
        task_timeout_s=task_timeout,
    )
    store, _, _ = _open(project, db)  # fail here, with a clear message, if there is none
    store.close()
    shown = f"[{host}]" if ":" in host else host
    err_console.print(
        f"annotating {proj.spec.name} at http://{shown}:{port}/ (store: {_where(settings.db_url)}"
        "); Ctrl+C stops"
    )
    run(settings)


@app.command()
def status(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    project: Path = PROJECT,
    db: str = DB,
) -> None:
    """Show progress, the calibration gate, agreement and each annotator.

    Also drift alerts (anchor accuracy falling) and the most disputed pairs."""
    # lazy: the annotate package imports sqlalchemy, slow for --help
    from rlhfkit.annotate import status as get_status

    store, policy, _ = _open(project, db)
    try:
        s = get_status(store, policy)
    finally:
        store.close()
    if as_json:
        print(strict_json.dumps(strict_json.nulled(s)))
        return
    _print_status(s)


BY = typer.Option(
    None, "--by", help="Who decided (recorded with the reason; default: the user running this)."
)


def _by(by: str | None) -> str:
    """Who is deciding: --by, else the login name of the user running the command."""
    return by or login_name()


@app.command("override-gate")
def override_gate(
    reason: str = typer.Option(..., help="Why the main queue opens anyway (recorded)."),
    unlabelled: bool = typer.Option(
        False,
        "--unlabelled",
        help="Override a round nobody has labelled yet (its gate was never evaluated): the "
        "main queue opens with no calibration at all.",
    ),
    by: str = BY,
    project: Path = PROJECT,
    db: str = DB,
) -> None:
    """Open the main queue although the calibration gate has not passed.

    The override, who made it and why are kept with the round and shown in status, the
    export's manifest and reports. Before overriding, `rlhfkit annotate status` says who
    drives the disagreement: `remove` or `recalibrate` may fix the cause instead. A round is
    overridden once; one nobody has labelled needs --unlabelled."""
    # lazy: the annotate package imports sqlalchemy, slow for --help
    from rlhfkit.annotate import override_gate as override

    store, _, _ = _open(project, db)
    try:
        round_id = override(store, reason, actor=_by(by), careful=True, unlabelled=unlabelled)
    finally:
        store.close()
    console.print(f"calibration round {round_id}: gate overridden ({reason})")


@app.command()
def remove(
    name: str = typer.Argument(..., help="The annotator to take off the round."),
    reason: str = typer.Option(..., help="Why (recorded, and shown in status and exports)."),
    by: str = BY,
    project: Path = PROJECT,
    db: str = DB,
) -> None:
    """Take an annotator off the team's work, when `status` names them as the one who drives
    the calibration gate's disagreement.

    Their calibration labels leave the gate, which is evaluated again: if it now passes, the
    main queue opens for everyone else. They get no more tasks (their open ones return to
    the pool), and their votes are left out of the export. Nothing is deleted: their labels
    stay in the store, and who removed them, when and why is recorded."""
    # lazy: the annotate package imports sqlalchemy, slow for --help
    from rlhfkit.annotate.annotators import remove_annotator

    store, policy, _ = _open(project, db)
    try:
        r = remove_annotator(store, policy, name, reason, actor=_by(by))
    finally:
        store.close()
    tasks = f"{r.released} open task{'' if r.released == 1 else 's'} released"
    console.print(f"{name} removed ({reason}); {tasks}; their labels stay, out of the gate")
    state = "[green]open[/green]" if r.main_queue_open else "[red]closed[/red]"
    console.print(
        f"calibration gate: {_fmt(r.gate_before)} -> {_fmt(r.gate_after)} (threshold "
        f"{policy.agreement_threshold:.2f}); main queue {state}"
    )


@app.command()
def recalibrate(
    same_items: bool = typer.Option(
        False,
        "--same-items",
        help="The latest round's pairs again (to measure a sharper rubric on the same pairs). "
        "Give this or --fresh.",
        show_default=False,
    ),
    fresh: bool = typer.Option(
        False,
        "--fresh",
        help="New pairs nobody has labeled ([annotation] calibration_size of them). Give this "
        "or --same-items.",
        show_default=False,
    ),
    reason: str = typer.Option(..., help="Why a new round (recorded)."),
    by: str = BY,
    seed: int = typer.Option(None, help="Seed for drawing --fresh pairs (default: random)."),
    project: Path = PROJECT,
    db: str = DB,
) -> None:
    """Open a new calibration round for the whole team (after a failed gate, a rubric
    change, a new annotator).

    Every annotator not removed labels it before more main items; the gate is evaluated
    again once two have finished it, and until then the main queue stays as the last
    verdict left it. Recorded, with who and why, like an override."""
    # lazy: the annotate package imports sqlalchemy, slow for --help
    from rlhfkit.annotate.rounds import recalibrate as open_new

    if same_items == fresh:
        raise UserError(
            "give one of --same-items (the latest round's pairs again) or --fresh (new pairs)"
        )
    store, policy, _ = _open(project, db)
    try:
        rng = random.Random(seed)
        r = open_new(store, policy, same_items, reason, actor=_by(by), rng=rng)
    finally:
        store.close()
    what = f"round {r.same_items_as}'s pairs again" if r.same_items_as else "fresh pairs"
    console.print(
        f"calibration round {r.round} opened: {r.size} pairs ({what}) that every annotator "
        "labels next"
    )


@app.command()
def export(
    out: Path = typer.Argument(..., help="Preference rows to write (.jsonl)."),
    labels: Path = typer.Option(
        None,
        help="Also write every label, one row per annotator and pair (what "
        "`rlhfkit agreement LABELS` reads, with shown_first for position bias).",
    ),
    gold: Path = typer.Option(
        None, help="Also write the anchors' answers (for `rlhfkit agreement --anchors`)."
    ),
    include_incomplete: bool = typer.Option(
        False, help="Also export pairs with fewer labels than the overlap."
    ),
    project: Path = PROJECT,
    db: str = DB,
) -> None:
    """Write each pair's majority answer as preference rows for training.

    Rows are prompt, chosen, rejected with annotator_ids, votes, rubric_version and margin,
    ready for `rlhfkit train rm` and `train dpo`. Annotators below the anchor-accuracy
    threshold are left out; ties and both-bad pairs are counted, not written."""
    # lazy: the annotate package imports sqlalchemy, slow for --help
    from rlhfkit.annotate import export as run_export

    store, policy, _ = _open(project, db)
    try:
        r = run_export(store, policy, out, labels, gold, include_incomplete)
    finally:
        store.close()
    console.print(
        f"{display_path(r.out)}: {r.rows} preference pairs ({r.ties} ties, {r.both_bad} both "
        f"bad, {r.no_majority} without a majority, {r.incomplete} incomplete left out)"
    )
    if r.excluded_annotators:
        console.print(
            f"left out below the anchor-accuracy threshold: {', '.join(r.excluded_annotators)}"
        )
    if r.gate_overridden:
        console.print("[yellow]the calibration gate was overridden; see the manifest[/yellow]")
    if labels:
        console.print(f"{display_path(labels)}: {r.labels} labels")


def _where(url: str) -> str:
    # lazy: the annotate package imports sqlalchemy, slow for --help
    from rlhfkit.annotate.store import shown_url

    return (
        display_path(url.removeprefix("sqlite:///")) if url.startswith("sqlite") else shown_url(url)
    )


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _print_gate(gate: dict) -> None:
    """The gate's one number and verdict, each round, and who drives a failure."""
    state = "[green]open[/green]" if gate["main_queue_open"] else "[red]closed[/red]"
    console.print(f"main queue: {state}")
    if gate["round"] is None:
        console.print(f"calibration gate: not evaluated yet ({gate['round_note']})")
    else:
        color = "green" if gate["passed"] else "red" if gate["passed"] is False else "yellow"
        console.print(
            f"calibration gate: percent agreement {_fmt(gate['value'])} on round "
            f"{gate['round']} ({gate['pairs']} pairs, {gate['annotators']} annotators) vs "
            f"threshold {gate['threshold']:.2f}: [{color}]{escape(gate['verdict'])}[/{color}]"
        )
    for r in gate["rounds"]:
        if r["override"]:
            verdict = (
                f"[yellow]overridden by {escape(r['override']['by'])}: "
                f"{escape(r['override']['reason'])}[/yellow]"
            )
        elif r["passed"] is None:
            verdict = "waiting for two annotators to finish"
        else:
            verdict = "[green]passed[/green]" if r["passed"] else "[red]failed[/red]"
        by = f", opened by {escape(r['opened_by'])}" if r.get("opened_by") else ""
        console.print(
            f"  round {r['round']} ({r['size']} pairs, {escape(r['reason'])}{by}): finished by "
            f"{r['annotators_finished']}, agreement {_fmt(r['percent_agreement'])}: {verdict}"
        )
    d = gate.get("disagreement")
    if not d:
        return
    table = Table("annotator", "gate without them", "agrees w/ others", "with each", title=None)
    for row in d["annotators"]:
        table.add_row(
            escape(row["annotator"]),
            _fmt(row["gate_without"]),
            _fmt(row["mean_pairwise"]),
            escape(", ".join(f"{k} {_fmt(v)}" for k, v in row["pairwise"].items())),
        )
    console.print(f"who drives the disagreement in round {d['round']} (leave-one-out):")
    console.print(table)
    console.print(f"[bold]what to do:[/bold] {escape(d['action'])}")


def _print_status(s: dict) -> None:
    p, gate = s["progress"], s["gate"]
    if s.get("simulated"):
        console.print(
            f"[bold]SIMULATED[/bold]: a pilot store; every label is a simulated annotator's "
            f"(judge {escape(str(s['simulated']['judge']))}), not a person's"
        )
    console.print(
        f"[bold]{p['complete_items']}[/bold] of {p['items']} pairs have {p['overlap']} labels "
        f"({100 * p['fraction_complete']:.0f}%); {p['labels']} labels; {p['anchors']} anchors; "
        f"{p['open_tasks']} tasks open"
    )
    _print_gate(gate)
    for e in s["token_events"]:
        console.print(f"{e['annotator']}'s token {e['event']} {e['at_utc']} by {e['by']}")
    a = s["agreement"]
    if a:
        console.print(
            f"overall agreement over all {a['n_items']} pairs with 2+ labels (every label, not "
            f"the gate): percent agreement {_fmt(a['percent_agreement'])}, Krippendorff's "
            f"alpha {_fmt(a['krippendorff_alpha'])}"
        )
    table = Table(
        "annotator", "labels", "round", "agrees w/ majority", "anchor acc.", "chose first", ""
    )
    for row in s["annotators"]:
        notes = []
        if row.get("excluded_from_export"):
            notes.append("left out of export")
        if row["in_calibration"]:
            notes.append("calibrating")
        if row["recalibration_due"]:
            notes.append("recalibration due")
        if row["revoked"]:
            notes.append("revoked")
        if row.get("removed"):
            notes.append(f"removed by {row['removed']['by']}: {row['removed']['reason']}")
        table.add_row(
            row["annotator"] + (" (admin)" if row["admin"] else ""),
            str(row["labels"]),
            str(row["calibrated_round"]),
            _fmt(row.get("majority_agreement")),
            _fmt(row.get("anchor_accuracy")),
            _fmt(row.get("chose_first_rate")),
            ", ".join(notes),
        )
    console.print(table)
    for d in s["drift_alerts"]:
        console.print(
            f"[yellow]drift:[/yellow] {d['annotator']}, window {d['window'] + 1}: {d['reason']}"
        )
    if s["disputed_items"]:
        worst = ", ".join(f"{d['item']} ({d['agreement']:.2f})" for d in s["disputed_items"][:5])
        console.print(f"most disputed: {worst}")
