"""`allx data inspect|split`: look at a directory-labelled image set and split it without leakage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from allx import layout
from allx.layout import SplitKind
from allx.console import escape, handle_errors, progress_bars, stderr, stdout
from allx.errors import UsageError
from allx.train.duplicates import NEAR_DISTANCE
from allx.train.charts import save_split_charts
from allx.train.dataset import inspect_dataset
from allx.train.embeddings import SIMILARITY, check_similarity
from allx.train.groups import DEFAULT_BLOCK_SIZE, grouping_options
from allx.train.leakage import split_leakage
from allx.train.split import make_split, read_split, write_split

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Inspect and split a directory-labelled image set (DATA_DIR/<class>/<image files>).")

DataDir = Annotated[Path, typer.Argument(help="Folder with one sub-folder of images per class.", metavar="DATA_DIR",
                                         show_default=False)]
Distance = Annotated[int, typer.Option(
    "--distance", help="Near-duplicate threshold: most bits two 64-bit perceptual hashes (phash) may differ "
    "by. The default was measured on the ALL data: re-captures of one field sit at 0-10, other fields from 12.")]
GroupsFile = Annotated[Optional[Path], typer.Option(
    "--groups", help="CSV with columns path,group (path relative to DATA_DIR): patient or slide IDs; no group "
    "ever straddles subsets. Every image needs a row; a group must stay inside one class.", show_default=False)]
GroupBy = Annotated[Optional[str], typer.Option(
    "--group-by", help="near-duplicate (default): exact and phash near-duplicates kept whole; sequence: also "
    "blocks of --block-size consecutive file numbers per class (a patient proxy when files are numbered in "
    "acquisition order).", show_default=False)]
BlockSize = Annotated[int, typer.Option(
    "--block-size", help="Files per block for --group-by sequence. The default was measured on the ALL data: "
    "related captures stay similar up to ~48 file numbers apart (README, 'Patient-like splits').")]
Neighbours = Annotated[Optional[bool], typer.Option(
    "--neighbours/--no-neighbours", help="Also join images whose backbone embeddings are near-identical "
    "(shifted views of one field; needs allx\\[train]). Default: on with --group-by sequence or --groups.",
    show_default=False)]
Similarity = Annotated[float, typer.Option(
    "--similarity", help="Cosine similarity of EfficientNet-Lite0 embeddings (centred on the data set's mean) "
    "at or above which two images are near-neighbours. Measured on the ALL data: from 0.90 pairs are shifted "
    "re-captures or other fields of one smear; below, mostly different slides.")]
SHOWN = 10  # groups listed in the table view; --json lists them all


def hashing(bars):
    """The progress(done, total) that image hashing reports, drawn as a "hashing images" bar."""
    return (lambda done, total: bars("hashing images", done, total)) if bars else None


def embedding(bars):
    """The progress(done, total) of computing embeddings, drawn as an "embeddings" bar."""
    return (lambda done, total: bars("embeddings", done, total)) if bars else None


@app.command()
@handle_errors
def inspect(
    data_dir: DataDir,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document instead of tables.")] = False,
    distance: Distance = NEAR_DISTANCE,
    split_file: Annotated[Optional[Path], typer.Option(
        "--split", help="A SPLIT.json of this data: also count near-neighbour pairs (phash and embedding) whose "
        "two images sit in different subsets, i.e. how much the split leaks.", show_default=False)] = None,
    neighbours: Neighbours = None,
    similarity: Similarity = SIMILARITY,
):
    """Report class balance, sizes, unreadable files, duplicates and near-duplicates.

    Lists per-class counts and balance, image sizes and modes, unreadable or non-image files (never
    fatal), exact duplicates (same bytes), label conflicts (the same image under two classes) and
    near-duplicate groups (connected components of phash pairs within --distance: chains can merge).
    With --split, also the near-neighbour pairs that cross its subsets (embedding pairs unless --no-neighbours)."""

    split_doc = None
    if split_file is not None:
        split_doc = read_split(split_file, data_dir)
        similarity = check_similarity(similarity) if neighbours is not False else None
    with progress_bars() as bars:
        report = inspect_dataset(data_dir, distance, hashing(bars))
        leakage = None
        if split_doc is not None:
            leakage = split_leakage(report.data_dir, split_doc, report.duplicates, similarity, embedding(bars))
    if as_json:
        document = report.to_json()
        if leakage is not None:
            document["split_leakage"] = {"split": str(split_file), "split_kind": split_doc.kind.value,
                                         **{kind: count.to_json() for kind, count in leakage.items()}}
        typer.echo(json.dumps(document, indent=2))
    else:
        render_inspect(report)
        if leakage is not None:
            render_leakage(split_file, split_doc, leakage)
    warn_conflicts(report.duplicates.conflicts, "listed above" if not as_json else "see label_conflicts")


@app.command()
@handle_errors
def split(
    data_dir: DataDir,
    out: Annotated[Path, typer.Option("--out", "-o", help="SPLIT.json to write; its charts go beside it.",
                                      show_default=False)],
    val: Annotated[float, typer.Option(help="Fraction of each class for validation.")] = 0.15,
    test: Annotated[float, typer.Option(help="Fraction of each class for the test set.")] = 0.15,
    seed: Annotated[int, typer.Option(help="Seed of the shuffle: the same seed and data give the same split.")] = 42,
    distance: Distance = NEAR_DISTANCE,
    groups: GroupsFile = None,
    group_by: GroupBy = None,
    block_size: BlockSize = DEFAULT_BLOCK_SIZE,
    neighbours: Neighbours = None,
    similarity: Similarity = SIMILARITY,
):
    """Split into train/val/test by class, keeping groups of related images whole.

    Stratified by class; exact and near-duplicate groups never straddle subsets, nor do patient groups
    (--groups), blocks of consecutive file numbers (--group-by sequence) or embedding near-neighbours
    (--neighbours). One copy of each exact duplicate is kept; near-duplicates spanning two classes
    (label conflicts) are dropped. split.json records the grouping kind (meta.split_kind).
    Writes SPLIT.json and <stem>_sizes.png, <stem>_proportions.png, <stem>_classes.png beside it."""

    if out.is_dir():
        raise UsageError(f"--out {out}: is a directory, expected a file name such as {out / layout.SPLIT}")
    kind, threshold = grouping_options(group_by, groups, neighbours, similarity)
    with progress_bars() as bars:
        result = make_split(data_dir, val=val, test=test, seed=seed, distance=distance, progress=bars,
                            group_by=kind, groups_file=groups, block_size=block_size, similarity=threshold)
    write_split(result, out)
    charts = save_split_charts(result, out)
    render_split(result, out, charts)
    if kind is SplitKind.NEAR_DUPLICATE:
        stderr.print("[bold red]warning:[/] no patient grouping given: a patient's fields can land in train and "
                     "val, so figures measured on val will be optimistic; pass --groups PATIENTS.csv, or "
                     "--group-by sequence when file numbers follow capture order", soft_wrap=True)
    conflicts = result.meta["label_conflicts"]
    if conflicts:
        images = sum(len(c["paths"]) for c in conflicts)
        stderr.print(f"[bold red]warning:[/] dropped {len(conflicts)} label-conflict group(s) ({images} images): "
                     f"see meta.label_conflicts in {escape(str(out))}", soft_wrap=True)


def render_inspect(report) -> None:
    stdout.print(f"{escape(str(report.data_dir))}: {report.total} readable images", soft_wrap=True)
    table = Table()
    for column in ("class", "images", "share"):
        table.add_column(column, justify="left" if column == "class" else "right")
    shares = report.balance()["shares"]
    for name, count in report.per_class.items():
        table.add_row(escape(name), str(count), f"{shares[name]:.1%}")
    stdout.print(table)
    ratio = report.balance()["largest_to_smallest"]
    stdout.print(f"balance: largest / smallest class = {ratio if ratio else 'n/a (an empty class)'}")
    stdout.print(f"sizes (WxH): {describe_counts(report.sizes)}")
    stdout.print(f"modes: {describe_counts(report.modes)}")
    stdout.print(f"unreadable or non-image files: {len(report.unreadable)}")
    for path, reason in report.unreadable:
        stdout.print(f"  {escape(path)}: {escape(reason)}", highlight=False, soft_wrap=True)
    dup = report.duplicates
    stdout.print(f"exact duplicates (same bytes): {len(dup.exact_groups)} group(s), "
                 f"{len(dup.copies())} extra copies")
    print_groups(dup.exact_groups)
    for conflict in dup.conflicts:
        stdout.print(f"  [bold red]LABEL CONFLICT ({conflict.kind})[/] {', '.join(conflict.classes)}: "
                     + ", ".join(escape(p) for p in conflict.paths), soft_wrap=True)
    method = dup.method()
    stdout.print(f"near-duplicate groups (phash within {method['distance']} bits, chained): {method['groups']} "
                 f"group(s), {method['images_in_groups']} images, largest {method['largest_group']}", soft_wrap=True)
    print_groups(sorted(dup.near_groups, key=len, reverse=True))


def render_leakage(split_file: Path, split, leakage) -> None:
    stdout.print(f"near-neighbour pairs crossing the subsets of {escape(str(split_file))} "
                 f"({split.kind.words}):", soft_wrap=True)
    for count in leakage.values():
        where = ", ".join(f"{k}: {v}" for k, v in count.by_subsets.items()) or "none"
        stdout.print(f"  {escape(count.method)}: {count.crossing} of {count.pairs} pair(s) cross ({where})",
                     soft_wrap=True)
        for a, b in count.examples:
            stdout.print(f"    {escape(a)} ~ {escape(b)}", highlight=False, soft_wrap=True)


def print_groups(groups) -> None:
    for group in groups[:SHOWN]:
        stdout.print("  " + ", ".join(escape(p) for p in group), highlight=False, soft_wrap=True)
    if len(groups) > SHOWN:
        stdout.print(f"  ... and {len(groups) - SHOWN} more (--json lists all)")


def describe_counts(counts: dict[str, int]) -> str:
    shown = ", ".join(f"{escape(k)}: {v}" for k, v in list(counts.items())[:5])
    return shown + (f" (+{len(counts) - 5} more)" if len(counts) > 5 else "") if counts else "none"


def warn_conflicts(conflicts, where: str) -> None:
    if conflicts:
        stderr.print(f"[bold red]warning: {len(conflicts)} label conflict(s)[/]: the same or a near-identical "
                     f"image under two classes ({where}); `allx data split` drops them", soft_wrap=True)


def render_split(result, out: Path, charts: list[Path]) -> None:
    counts, meta = result.counts(), result.meta
    stdout.print(f"split of {escape(meta['data_dir'])} (seed {meta['seed']}, {SplitKind.parse(meta['split_kind']).words})", soft_wrap=True)
    table = Table()
    table.add_column("class")
    for name in (*counts, "total"):
        table.add_column(name, justify="right")
    for name in result.classes:
        row = [counts[s][name] for s in counts]
        table.add_row(escape(name), *map(str, row), str(sum(row)))
    totals = [len(result.subset(s)) for s in counts]
    table.add_row("total", *map(str, totals), str(sum(totals)), style="bold")
    stdout.print(table)
    near, grouping = meta["near_duplicate"], meta["grouping"]
    stdout.print(f"near-duplicate groups kept whole: {len(meta['near_duplicate_groups'])} "
                 f"(phash within {near['distance']} bits, largest {near['largest_group']}); "
                 f"exact copies dropped: {len(meta['dropped_duplicates'])}; "
                 f"unreadable skipped: {len(meta['unreadable'])}", soft_wrap=True)
    joined = grouping.get("neighbours")
    stdout.print(f"groups assigned whole: {grouping['groups']} (largest {grouping['largest_group']} images)"
                 + (f"; blocks of {grouping['block_size']} file numbers" if "block_size" in grouping else "")
                 + (f"; embedding near-neighbour pairs joined: {joined['pairs_joined']} (cosine >= "
                    f"{joined['threshold']:g})" if joined else ""), soft_wrap=True)
    for written in (out, *charts):
        stdout.print(f"wrote {escape(str(written))}", highlight=False, soft_wrap=True)
