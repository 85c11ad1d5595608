"""`rlhfkit agreement`: how well the annotators agree, and who drifts."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from rlhfkit import strict_json
from rlhfkit.cli.common import console
from rlhfkit.errors import UserError
from rlhfkit.lineage import manifest_path


def agreement(
    labels: Path = typer.Argument(
        ...,
        help="Labels as CSV or JSONL: columns item, annotator, label (optional "
        "shown_first, timestamp).",
    ),
    level: str = typer.Option(
        "nominal",
        help="Level of measurement for Krippendorff's alpha: nominal (preference "
        "labels A/B/tie/both_bad), ordinal, interval or ratio (numeric labels).",
    ),
    anchors: Path = typer.Option(
        None,
        help="Gold answers for anchor items (CSV/JSONL with item, label): adds anchor "
        "accuracy per annotator and drift alerts.",
    ),
    order: str = typer.Option(
        None, help="Comma-separated label values in order, for ordinal string labels."
    ),
    threshold: float = typer.Option(
        None,
        help="Percent agreement the calibration gate requires (the article: 0.65 is "
        "the floor, 0.70-0.75 the target). Default: the project's [annotation] "
        "agreement_threshold, read from the manifest `annotate export --labels` writes "
        "beside the file, so the verdict is the store's; 0.65 without one.",
    ),
    anchor_threshold: float = typer.Option(0.7, help="Anchor accuracy below this alerts."),
    window: int = typer.Option(20, help="Anchor labels per drift window."),
    bootstrap: int = typer.Option(1000, help="Bootstrap replicates for the intervals."),
    plots: Path = typer.Option(None, help="Folder to write agreement.png (and anchors.png)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Agreement statistics for a set of labels: percent agreement, Cohen's kappa per pair,
    Fleiss' kappa, Krippendorff's alpha (with 95% bootstrap intervals over items), and per
    annotator: agreement with the others' majority, anchor accuracy, position bias, tie and
    both-bad rates, labels per hour.

    For pairwise preferences read Krippendorff's alpha (nominal): it handles missing labels
    and corrects for chance. The calibration gate uses percent agreement, as the article's
    65-75% rule does, on the labels marked `gate` (an `rlhfkit annotate export --labels`
    file marks the ones the store decided its gate on, so the number is the one `annotate
    status` shows); on every label when none are marked.
    """
    # lazy: the agreement package imports numpy (and its plots matplotlib): slow for --help
    from rlhfkit.agreement import read_gold, summarise

    values = _check(level, threshold, anchor_threshold, window, bootstrap, order)
    data = _read(labels, level, values)
    gold = read_gold(anchors, data) if anchors else None
    threshold, source = _threshold(labels, threshold, marked=data.gate is not None)
    summary = summarise(data, level, gold, threshold, bootstrap, anchor_threshold, window)
    summary["calibration_gate"]["threshold_source"] = source
    if plots:
        summary["plots"] = _plot(data, gold, plots, window, anchor_threshold)
    if as_json:
        print(strict_json.dumps(strict_json.nulled(summary)))
        return
    _print(summary)


def _check(
    level: str,
    threshold: float | None,
    anchor_threshold: float,
    window: int,
    bootstrap: int,
    order: str | None,
) -> list[str] | None:
    """Refuse impossible settings before reading anything; the --order values, if given."""
    from rlhfkit.agreement import LEVELS  # lazy: as in agreement()

    if level not in LEVELS:
        raise UserError(f"--level is one of {', '.join(LEVELS)}")
    for option, value in (("--threshold", threshold), ("--anchor-threshold", anchor_threshold)):
        if value is not None and not 0.0 <= value <= 1.0:  # also refuses nan
            raise UserError(f"{option} is a share: a finite number from 0 to 1, not {value}")
    if window < 1 or bootstrap < 0:
        raise UserError("--window is at least 1 and --bootstrap at least 0")
    values = [v.strip() for v in order.split(",")] if order else None
    if values is not None and ("" in values or len(set(values)) < len(values)):
        raise UserError(f"--order lists each label value once, comma-separated: not {order!r}")
    return values


DEFAULT_THRESHOLD = 0.65
"""The gate's threshold where neither --threshold nor an export manifest gives one."""


def _threshold(labels: Path, given: float | None, marked: bool) -> tuple[float, str]:
    """The calibration gate's threshold, and where it came from: --threshold; else the
    project's, from the manifest `annotate export --labels` writes beside the file; else
    DEFAULT_THRESHOLD (said, where the rows mark the store's gate: the verdict may differ)."""
    if given is not None:
        return given, "--threshold"
    manifest = manifest_path(labels)
    found = None
    if manifest.is_file():
        try:
            found = strict_json.loads(manifest.read_text())["config"]["agreement_threshold"]
        except (ValueError, KeyError, TypeError):
            found = None  # not an export's manifest: as if there were none
    if isinstance(found, int | float) and 0.0 <= found <= 1.0:
        return float(found), f"the project's, from {manifest.name}"
    if marked:
        return DEFAULT_THRESHOLD, (
            "the default: no export manifest beside the file says the project's; give "
            "--threshold for the store's verdict"
        )
    return DEFAULT_THRESHOLD, "the default"


def _read(labels: Path, level: str, values: list[str] | None):
    """The labels; string labels given an --order become their ranks for ordinal levels."""
    from rlhfkit.agreement import read_labels  # lazy: as in agreement()
    from rlhfkit.agreement.labels import Labels

    data = read_labels(labels, values)
    if level != "nominal" and not data.numeric and values is None:
        raise UserError(
            f"{labels}: --level {level} needs numeric labels, or --order for string labels"
        )
    if values is not None and not data.numeric and level != "nominal":  # ordered: ranks
        data = Labels(
            data.item,
            data.annotator,
            data.label,
            data.items,
            data.annotators,
            _ranks(len(data.values)),
            data.shown_first,
            data.timestamp,
            data.gate,
        )
    return data


def _plot(data, gold, folder: Path, window: int, anchor_threshold: float) -> list[str]:
    """agreement.png, and anchors.png when there are gold answers: the files written."""
    from rlhfkit.agreement.gates import anchor_drift  # lazy: as in agreement()
    from rlhfkit.agreement.plots import anchor_accuracy_plot, kappa_heatmap

    written = [str(kappa_heatmap(data, folder / "agreement.png"))]
    if gold:
        series, _ = anchor_drift(data, gold, window, anchor_threshold)
        written.append(str(anchor_accuracy_plot(series, folder / "anchors.png", anchor_threshold)))
    return written


def _ranks(n: int):
    import numpy as np  # lazy: slow for --help

    return np.arange(1, n + 1, dtype=float)


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _print(s: dict) -> None:
    _print_statistics(s)
    _print_gate(s)
    _print_annotators(s)
    for alert in s.get("drift_alerts", []):
        console.print(
            f"[yellow]drift:[/yellow] {escape(alert['annotator'])}, window "
            f"{alert['window'] + 1}: {alert['reason']}"
        )
    for path in s.get("plots", []):
        console.print(f"plot: {escape(path)}")


def _print_statistics(s: dict) -> None:
    """The counts, then each agreement statistic with its interval and note."""
    ci = s["ci"]
    console.print(
        f"[bold]{s['n_labels']}[/bold] labels, {s['n_items']} items, "
        f"{s['n_annotators']} annotators ({s['labels_per_item']['min']}-"
        f"{s['labels_per_item']['max']} labels per item)"
    )
    table = Table(
        "statistic", "value", "95% interval", "note", title="over every label (not the gate)"
    )
    table.add_row(
        "percent agreement",
        _fmt(s["percent_agreement"]),
        f"{_fmt(ci['percent_agreement'][0])} - {_fmt(ci['percent_agreement'][1])}",
        escape(s["percent_agreement_note"] or ""),
    )
    table.add_row(
        f"Krippendorff's alpha ({s['level']})",
        _fmt(s["krippendorff_alpha"]),
        f"{_fmt(ci['krippendorff_alpha'][0])} - {_fmt(ci['krippendorff_alpha'][1])}",
        escape(s["krippendorff_alpha_note"] or "read this one"),
    )
    table.add_row(
        "Cohen's kappa, mean of pairs",
        _fmt(s["cohen_kappa_mean"]),
        f"{_fmt(ci['cohen_kappa_mean'][0])} - {_fmt(ci['cohen_kappa_mean'][1])}",
        escape(s["cohen_kappa_mean_note"] or ""),
    )
    table.add_row(
        "Fleiss' kappa", _fmt(s["fleiss_kappa"]), "", escape(s["fleiss_kappa_note"] or "")
    )
    console.print(table)


def _print_gate(s: dict) -> None:
    """The calibration gate's verdict, the missing intervals and the most disputed items."""
    gate = s["calibration_gate"]
    verdict = "[green]passes[/green]" if gate["passed"] else "[red]fails[/red]"
    scope = (
        f"on the calibration round's labels the store decided on ({gate['items']} pairs, "
        f"{gate['annotators']} annotators)"
        if gate["scope"] == "calibration round"
        else f"over all {gate['items']} items (the file marks no gate labels: not the "
        "annotation store's gate)"
    )
    console.print(
        f"calibration gate: percent agreement {_fmt(gate['value'])} {scope} vs threshold "
        f"{gate['threshold']:.2f} ({escape(gate['threshold_source'])}): {verdict}"
    )
    if gate["value_note"]:
        console.print(f"  ({escape(gate['value_note'])})")
    for name, why in s["ci_notes"].items():
        if s[name] is not None:  # else the statistic's own note says it
            console.print(f"no interval for {name.replace('_', ' ')}: {escape(why)}")
    if gate["disputed_items"]:
        worst = ", ".join(f"{i} ({a:.2f})" for i, a in gate["disputed_items"][:5])
        console.print(f"most disputed items: {escape(worst)}")


def _print_annotators(s: dict) -> None:
    """One row per annotator, then why a cell says n/a."""
    people = Table(
        "annotator",
        "labels",
        "agrees w/ majority",
        "anchor acc.",
        "chose first",
        "tie",
        "both bad",
        "labels/h",
    )
    for a in s["annotators"]:
        people.add_row(
            escape(a["annotator"]),
            str(a["labels"]),
            _fmt(a["majority_agreement"]),
            _fmt(a["anchor_accuracy"]),
            _fmt(a["chose_first_rate"]),
            _fmt(a["tie_rate"]),
            _fmt(a["both_bad_rate"]),
            "n/a" if a["labels_per_hour"] is None else f"{a['labels_per_hour']:.0f}",
        )
    console.print(people)
    columns = {
        "majority_agreement": "agrees w/ majority",
        "anchor_accuracy": "anchor acc.",
        "chose_first_rate": "chose first",
        "labels_per_hour": "labels/h",
    }
    for key, column in columns.items():
        who = [a["annotator"] for a in s["annotators"] if a.get(f"{key}_note")]
        if who:
            why = next(a[f"{key}_note"] for a in s["annotators"] if a.get(f"{key}_note"))
            console.print(escape(f"n/a in {column} ({', '.join(who)}): {why}"))
    for name, why in s["calibration_gate"]["annotator_agreement_notes"].items():
        console.print(escape(f"calibration: {name}: {why}"))
