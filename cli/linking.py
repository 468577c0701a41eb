"""``pprl link`` and ``pprl evaluate``: the linkage engine from the command line."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import click

from cli.common import progress, protocol_option
from linkage.encodings import read_encodings
from linkage.errors import InputError
from linkage.evaluation.blocking import BlockingAnalysis
from linkage.evaluation.scores import PairwiseScores
from linkage.matching.dedupe import duplicate_groups
from linkage.matching.engine import link as link_encodings
from linkage.matching.engine import load_inputs
from linkage.matching.frozen import FrozenModel, read_model, write_model
from linkage.matching.link_state import LinkState, read_state, write_state
from linkage.matching.refresh import BatchSummary, refit_state, refresh_state, start_state
from linkage.protocol import Protocol, load_protocol
from linkage.token_files import (
    read_tokens,
    write_duplicates,
    write_entities,
    write_retired,
    write_state_entities,
)


def _threshold(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | None:
    if value is None or value == "auto":
        return None
    try:
        number = float(value)
    except ValueError as exc:
        raise click.BadParameter("write 'auto' or a match probability between 0 and 1") from exc
    if not 0 < number < 1:
        raise click.BadParameter("a match probability must be between 0 and 1")
    return number


@click.command()
@protocol_option
@click.argument("inputs", metavar="ENC...", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="entities.csv to write.")
@click.option(
    "--threshold",
    callback=_threshold,
    help="'auto' (chosen from the data, no labels needed) or a match probability; default: the protocol's.",
)
@click.option("--include-singletons", is_flag=True, help="Also write records that matched no other party.")
@click.option(
    "--model",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Decide every pair with this frozen model (from --save-model) instead of fitting one on these records.",
)
@click.option(
    "--save-model",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Fit a model on these records, freeze it (no term frequencies) and write it here, for later runs' --model.",
)
@click.option(
    "--statistics-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the stable mapping `pprl query --entities` reads (needs --model or --save-model).",
)
@click.option(
    "--state-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Keep the linkage state here (linkage side only: it holds the encodings and match weights), so that "
    "the next quarter's batch is added with --previous instead of linking everything again.",
)
@click.option(
    "--previous",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Add a batch to this linkage state: each ENC holds a party's new and corrected records (a token the "
    "state holds is a correction); entity ids carry over. Needs --state-out.",
)
@click.option(
    "--withdraw",
    "withdrawals",
    multiple=True,
    metavar="PARTY=FILE",
    help="With --previous: remove these tokens of PARTY (one per line, or key map rows); repeat per party.",
)
@click.option(
    "--refit",
    is_flag=True,
    help="With --previous: fit the model again on the final lists and link them from scratch (ids carry over).",
)
@click.option(
    "--dedupe",
    is_flag=True,
    help="With --state-out: also match each party's records with its own, so that one client under two ids "
    "joins one entity (kept in the state for later batches).",
)
@click.option(
    "--dedupe-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With a --dedupe state: write duplicate_group,party,token, each party's records likely to be one client.",
)
@click.option(
    "--retired-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --previous: where to write retired_entity_id,entity_id (default: OUT's name + .retired.csv).",
)
@click.option("--workers", type=click.IntRange(min=1), help="Processes to use (default: every core).")
@click.option(
    "--dask",
    metavar="tcp://HOST:PORT",
    help="Run the comparisons on this Dask scheduler; the encodings are sent to each of its workers once.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def link(
    protocol: Protocol,
    inputs: tuple[Path, ...],
    out: Path,
    threshold: float | None,
    include_singletons: bool,
    model: Path | None,
    save_model: Path | None,
    statistics_out: Path | None,
    state_out: Path | None,
    previous: Path | None,
    withdrawals: tuple[str, ...],
    refit: bool,
    dedupe: bool,
    dedupe_out: Path | None,
    retired_out: Path | None,
    workers: int | None,
    dask: str | None,
    quiet: bool,
) -> None:
    """Match the encodings of two or more parties and group them into entities.

    Each ENC is an encodings.pprl file or the folder `pprl encode` wrote. Writes
    entity_id,party,token with at most one record per party per entity; similarity scores
    never leave the engine. For statistics (`pprl query`), fit and freeze a model once
    with --save-model, and write the stable mapping with --statistics-out: with a frozen
    model, one person's records can move at most (parties)² rows of the statistics table
    (docs/privacy-unit.md).

    Every quarter: link the full lists once with --state-out STATE, then add each
    quarter's batch with --previous STATE --state-out STATE: only the new and corrected
    records are compared, and an entity keeps its id unless its records change
    (docs/refresh.md).

    Example: pprl link --protocol protocol.json msd-out police-out haven-out --out entities.csv
    --save-model model.json --statistics-out stable.csv

    Example: pprl link --protocol protocol.json msd-q2 police-q2 --previous state.pprl --state-out state.pprl
    --withdraw msd=msd-withdrawn.txt --out entities.csv
    """
    if previous is not None:
        if state_out is None:
            raise InputError("--previous needs --state-out FILE (it may be the same file) to keep the new state")
        if model or save_model or threshold is not None:
            raise InputError(
                "--previous links with the state's own frozen model: drop --model, --save-model, --threshold"
            )
        state = read_state(previous, protocol)
        if dedupe_out and not state.dedupe:
            raise InputError(f"--dedupe-out needs a state linked with --dedupe, and {previous} was not")
        if statistics_out and state.dedupe:
            raise InputError(_NO_DEDUPED_STATISTICS)
        batch = [read_encodings(path) for path in inputs]
        withdrawn = _withdrawals(withdrawals)
        with progress("comparing the batch", quiet=quiet) as on_progress:
            if refit:
                new_state, summary = refit_state(
                    protocol,
                    state,
                    batch,
                    withdrawn,
                    work_dir=state_out.resolve().parent,
                    workers=workers or os.cpu_count() or 1,
                    dask=dask,
                    on_progress=on_progress,
                )
            else:
                new_state, summary = refresh_state(protocol, state, batch, withdrawn, on_progress=on_progress)
        write_state(new_state, state_out)
        retired_path = retired_out or out.with_name(f"{out.stem}.retired.csv")
        write_retired(dict(summary.retired), retired_path)
        _render_batch(summary)
        _write_state_outputs(new_state, out, include_singletons, statistics_out, dedupe_out)
        click.echo(f"wrote {len(summary.retired):,} retired entity ids to {retired_path}")
        click.echo(f"kept the linkage state (batch {new_state.batches}) in {state_out}")
        return
    if withdrawals or retired_out or refit:
        raise InputError("--withdraw, --refit and --retired-out add to a linkage state: pass --previous STATE")
    if (dedupe or dedupe_out) and state_out is None:
        raise InputError("--dedupe and --dedupe-out keep their pairs in a linkage state: pass --state-out STATE")
    if dedupe_out and not dedupe:
        raise InputError("--dedupe-out reports what --dedupe finds: pass --dedupe too")
    if statistics_out and dedupe:
        raise InputError(_NO_DEDUPED_STATISTICS)
    if len(inputs) < 2:
        raise InputError("linkage needs the encodings of at least two parties; pass two or more ENC")
    if state_out is not None:
        frozen = read_model(model, protocol) if model else None
        encodings = load_inputs(protocol, inputs)
        with progress("comparing", quiet=quiet) as on_progress:
            state = start_state(
                protocol,
                encodings,
                model=frozen,
                threshold=threshold,
                workers=workers or os.cpu_count() or 1,
                dask=dask,
                on_progress=on_progress,
                dedupe=dedupe,
            )
        write_state(state, state_out)
        _write_state_outputs(state, out, include_singletons, statistics_out, dedupe_out)
        _save_model(state.model, save_model)
        click.echo(f"kept the linkage state ({len(state.pairs):,} accepted pairs) in {state_out}")
        return
    if model and save_model:
        raise InputError("pass --model (use a frozen model) or --save-model (fit and freeze one), not both")
    if statistics_out and not (model or save_model):
        raise InputError(
            "--statistics-out needs a frozen model: fit one with --save-model FILE, or pass one with --model FILE"
        )
    frozen = read_model(model, protocol) if model else None
    encodings = load_inputs(protocol, inputs)
    if threshold is None and protocol.threshold is not None and frozen is None:
        threshold = protocol.threshold
    with progress("comparing", quiet=quiet) as on_progress:
        result = link_encodings(
            protocol,
            encodings,
            threshold=threshold,
            workers=workers or os.cpu_count() or 1,
            dask=dask,
            on_progress=on_progress,
            model=frozen,
            freeze=save_model is not None,
        )
    entities = write_entities(result, out, include_singletons=include_singletons)
    records = sum(len(entity.records) for entity in result.entities)
    click.echo(
        f"compared {result.pairs_compared:,} candidate pairs of {result.pairs_total:,} possible "
        f"({result.pairs_compared / max(result.pairs_total, 1):.4%}); accepted {result.pairs_accepted:,} "
        f"at match probability >= {result.threshold:.3f}"
    )
    click.echo(
        f"{len(result.entities):,} entities of two or more records ({records:,} records) in {result.seconds:.1f} s"
    )
    click.echo(f"wrote {entities:,} entities to {out}")
    if save_model and result.model is not None:
        write_model(result.model, save_model)
        click.echo(f"froze the model (threshold {result.model.threshold:.3f}) in {save_model}")
    if statistics_out and result.stable is not None:
        written = write_entities(result, statistics_out, stable=True)
        stable = result.stable
        click.echo(f"wrote the stable mapping ({written:,} entities) to {statistics_out}")
        click.echo(
            f"{stable.ambiguous_records:,} records in {stable.ambiguous_clusters:,} clusters holding two records of "
            f"one party; any one person's records can move at most {stable.worst_deletion} rows of these records' "
            f"statistics table (the protocol calibrates at {protocol.rows_per_person})"
        )


_NO_DEDUPED_STATISTICS = (
    "--statistics-out: the privacy unit (docs/privacy-unit.md) is derived for entities with at most one record "
    "per party, and a --dedupe state's entities may hold two; write the stable mapping from a state linked "
    "without --dedupe"
)


def _withdrawals(values: tuple[str, ...]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for value in values:
        party, sep, file = value.partition("=")
        if not sep or not party or not file:
            raise InputError(f"--withdraw {value!r}: write PARTY=FILE, e.g. --withdraw msd=msd-withdrawn.txt")
        out.setdefault(party, []).extend(read_tokens(Path(file)))
    return out


def _render_batch(summary: BatchSummary) -> None:
    for party in summary.added:
        click.echo(
            f"{party}: {summary.added[party]:,} added, {summary.corrected[party]:,} corrected, "
            f"{summary.withdrawn[party]:,} withdrawn"
        )
    click.echo(
        f"compared {summary.pairs_compared:,} candidate pairs of new or corrected records (0: --refit compared all); "
        f"{summary.pairs_accepted:,} accepted pairs in all; solved {summary.components_solved:,} clusters again "
        f"({summary.records_solved:,} records) in {summary.seconds:.1f} s"
    )


def _write_state_outputs(
    state: LinkState, out: Path, include_singletons: bool, statistics_out: Path | None, dedupe_out: Path | None
) -> None:
    written = write_state_entities(state, out, include_singletons=include_singletons)
    click.echo(f"wrote {written:,} entities to {out} (threshold {state.model.threshold:.3f})")
    if statistics_out is not None:
        stable = write_state_entities(state, statistics_out, stable=True)
        click.echo(f"wrote the stable mapping ({stable:,} entities, the same ids) to {statistics_out}")
    if dedupe_out is not None:
        groups = duplicate_groups(state)
        write_duplicates(groups, dedupe_out)
        click.echo(f"wrote {len(groups):,} groups of likely duplicates within a party to {dedupe_out}")


def _save_model(model: FrozenModel, path: Path | None) -> None:
    if path is not None:
        write_model(model, path)
        click.echo(f"froze the model (threshold {model.threshold:.3f}) in {path}")


def _keymaps(values: tuple[str, ...]) -> dict[str, Path]:
    out = {}
    for value in values:
        party, sep, file = value.partition("=")
        if not sep or not party or not file:
            raise InputError(f"--keymap {value!r}: write PARTY=PATH, e.g. --keymap msd=msd-out/keymap.csv")
        out[party] = Path(file)
    return out


@click.command()
@click.option("--truth", type=click.Path(dir_okay=False, path_type=Path), help="party,client_id,person_id")
@click.option("--entities", type=click.Path(dir_okay=False, path_type=Path), help="From `pprl link`.")
@click.option("--keymap", "keymaps", multiple=True, help="PARTY=PATH of a key map; once per party (with --truth).")
@click.option(
    "--protocol",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --encodings: analyse blocking (no truth needed).",
)
@click.option("--encodings", "encoding_paths", multiple=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    help="PNG of precision and recall by threshold (needs --truth, --protocol and --encodings).",
)
@click.option("--workers", type=click.IntRange(min=1), help="Processes for re-scoring (default: every core).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def evaluate(
    truth: Path | None,
    entities: Path | None,
    keymaps: tuple[str, ...],
    protocol: Path | None,
    encoding_paths: tuple[Path, ...],
    plot: Path | None,
    workers: int | None,
    quiet: bool,
) -> None:
    """Score a linkage against the truth, and analyse blocking rule by rule.

    With --truth, --entities and a --keymap per party: pairwise and cluster measures. With
    --protocol and --encodings (one per party, as linked): per blocking rule the candidate
    pairs it proposes, those no earlier rule proposed (cumulative, as Splink charts them),
    skipped oversized blocks, and the largest blocks; no truth needed. With the truth as
    well: pair completeness rule by rule, and --plot draws precision and recall against the
    match-probability threshold. For development and audit.

    Example: pprl evaluate --truth data/truth.csv --entities entities.csv
    --keymap msd=msd-out/keymap.csv --keymap police=police-out/keymap.csv
    --protocol protocol.json --encodings msd-out --encodings police-out
    """
    from linkage.evaluation.evaluate import evaluate_linkage

    with progress("analysing blocking", quiet=quiet) as on_progress:
        result = evaluate_linkage(
            truth=truth,
            entities=entities,
            keymaps=_keymaps(keymaps),
            protocol=load_protocol(protocol) if protocol else None,
            encodings=encoding_paths,
            curve=plot is not None,
            workers=workers or os.cpu_count() or 1,
            on_progress=on_progress,
        )
    if result.pairwise is not None and result.clusters is not None:
        pairwise, clustered = result.pairwise, result.clusters
        click.echo(f"pairwise   precision {pairwise.precision:.4f}  recall {pairwise.recall:.4f}  F1 {pairwise.f1:.4f}")
        click.echo(
            f"           true pairs {result.true_pairs:,}, found {pairwise.true_positives:,}, "
            f"false {pairwise.false_positives:,}, missed {pairwise.false_negatives:,}"
        )
        click.echo(
            f"clusters   {clustered.exact:,} of {clustered.true_entities:,} people linked exactly "
            f"({clustered.exact_share:.4f}); {clustered.predicted_entities:,} entities predicted"
        )
    if result.blocking is not None:
        _render_blocking(result.blocking)
    if plot:
        _plot(result.curve, plot)
        click.echo(f"plot       {plot}")


def _render_blocking(blocking: BlockingAnalysis) -> None:
    line = (
        f"blocking   {blocking.candidate_pairs:,} candidates of {blocking.total_pairs:,} pairs "
        f"(reduction ratio {blocking.reduction_ratio:.6f}, {blocking.candidates_per_record:,.1f} per record "
        "of the largest party)"
    )
    if blocking.pair_completeness is not None:
        line += (
            f"; pair completeness {blocking.pair_completeness:.4f} "
            f"({blocking.true_pairs_kept:,} of {blocking.true_pairs:,} true pairs kept; "
            f"{blocking.true_pairs_skipped:,} lost to skipped oversized blocks)"
        )
    click.echo(line)
    truth = blocking.pair_completeness is not None
    header = f"  {'rule':<58} {'candidates':>13} {'added':>13} {'cumulative':>11} {'skipped blocks':>15}"
    click.echo(header + (f" {'true pairs':>11} {'added':>7} {'completeness':>12}" if truth else ""))
    for rule in blocking.rules:
        name = rule.rule if len(rule.rule) <= 58 else rule.rule[:55] + "..."
        row = (
            f"  {name:<58} {rule.candidates:>13,} {rule.added:>13,} {rule.cumulative_share:>10.1%} "
            f"{rule.oversized_blocks:>6,} ({rule.oversized_pairs:,} pairs)".ljust(len(header))
        )
        if truth:
            row += f" {rule.true_pairs:>11,} {rule.true_added:>7,} {rule.pair_completeness:>12.4f}"
        click.echo(row)
    if blocking.largest_blocks:
        click.echo("  largest blocks:")
        for block in blocking.largest_blocks:
            skipped = " - skipped, over the limit" if block.skipped else ""
            click.echo(
                f"    {block.pairs:>12,} pairs ({block.records[0]:,} x {block.records[1]:,} records, "
                f"{block.parties[0]} x {block.parties[1]}) {block.rule}{skipped}"
            )


def _plot(curve: Sequence[tuple[float, PairwiseScores]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    thresholds = [t for t, _ in curve]
    figure, axes = plt.subplots(figsize=(7, 4.5))
    axes.plot(thresholds, [s.precision for _, s in curve], label="precision")
    axes.plot(thresholds, [s.recall for _, s in curve], label="recall")
    axes.plot(thresholds, [s.f1 for _, s in curve], label="F1", linestyle="--")
    axes.set_xlabel("match probability threshold")
    axes.set_ylabel("pairwise score")
    axes.set_title("Linkage quality by threshold")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
