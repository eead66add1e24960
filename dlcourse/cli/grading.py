"""The instructor's and the hand-in commands: `dlcourse assignment show|check`, `dlcourse
handin` and `dlcourse grade`.

`assignment show` reads the assignment file only and never imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dlcourse.cli.common import (
    DataDirOption,
    RunArg,
    cli_errors,
    echo_while_read,
    resolve_data_dir,
)

if TYPE_CHECKING:
    from dlcourse.grading.gradebook import Row

AssignmentArg = Annotated[
    Path,
    typer.Argument(
        exists=True,
        dir_okay=False,
        metavar="ASSIGNMENT",
        help="The assignment file (*.assignment.yaml).",
    ),
]


@cli_errors
def show(assignment: AssignmentArg) -> None:
    """Print the assignment: the question, what may change, the target and how it is graded."""
    from dlcourse.grading.assignment import describe_assignment, load_assignment

    typer.echo(describe_assignment(load_assignment(assignment)), nl=False)


@cli_errors
def check(assignment: AssignmentArg, run_dir: RunArg) -> None:
    """Check a run before handing it in: locks kept, ranges respected, the run complete, the
    target on the dev split, and exactly what will be handed in (exit 2 on a mistake)."""
    from dlcourse.grading.assignment import load_assignment
    from dlcourse.grading.bundle import MANIFEST, REPORT
    from dlcourse.grading.verify import check_run

    found = check_run(load_assignment(assignment), run_dir)
    typer.echo(f"{run_dir} for {found.assignment.title!r} ({assignment}):")
    for item in found.checks:
        mark = "ok  " if item.ok else ("FAIL" if item.mistake else "note")
        typer.echo(f"  {mark}  {item.name}: {item.text}")
    typer.echo("what `dlcourse handin` will put in the zip:")
    for name, size, digest in found.files:
        typer.echo(f"  {name:<18} {size:>12,} bytes  sha256 {digest[:16]}...")
    typer.echo(f"  {REPORT:<18} written by dlcourse handin (dlcourse report of the run)")
    typer.echo(
        f"  {MANIFEST:<18} every file's SHA-256, the assignment's, your student id, the "
        "versions, the platform, the seed, the device and the threads"
    )
    if found.mistakes:
        typer.echo(f"error: not ready to hand in: {len(found.mistakes)} check(s) failed", err=True)
        raise typer.Exit(2)
    typer.echo("ready to hand in")


@cli_errors
def handin(
    run_dir: RunArg,
    student: Annotated[str, typer.Option(help="Your student id (letters, digits, . _ - + @).")],
    out: Annotated[Path, typer.Option(help="The zip to write, e.g. ID.zip.")],
    assignment: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="The assignment (default: the one the run was trained for).",
        ),
    ] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Bundle a finished run for grading: its config, metrics, summary, kept weights, report
    and the assignment, with a manifest of their SHA-256s; no pickles."""
    from dlcourse.grading.handin import make_handin

    made = make_handin(
        run_dir,
        student=student,
        out=out,
        data_dir=resolve_data_dir(data_dir),
        assignment=assignment,
    )
    target = made.check.assignment.target
    claims = [item.text for item in made.check.checks if item.name.startswith("the target")]
    typer.echo(
        f"wrote {out} ({made.size / 1024:,.0f} KB: {len(made.manifest['files'])} files and a "
        f"manifest) for {made.check.assignment.title!r}, student {student}"
    )
    for claim in claims:
        typer.echo(f"  {claim}")
    typer.echo(f"  the grader measures the {target.split} {target.metric} of the kept weights")


@cli_errors
def grade(
    assignment: AssignmentArg,
    submissions: Annotated[
        list[Path],
        typer.Argument(metavar="SUBMISSION...", help="Hand-in zips, or folders of them."),
    ],
    out: Annotated[
        Path,
        typer.Option(
            help="A new folder for the gradebook, class page, reports and the hand-ins' files."
        ),
    ],
    test_data: Annotated[
        Path | None,
        typer.Option(
            help="The grader's own test set, which students never had: a CSV (churn, csv) or "
            "a folder with the t10k IDX files (mnist). Default: the assignment's test split."
        ),
    ] = None,
    jobs: Annotated[
        int, typer.Option(min=1, help="Hand-ins graded at once, each in its own process.")
    ] = 1,
    retrain: Annotated[
        bool,
        typer.Option(
            "--retrain",
            help="Also train each config again on the CPU and compare "
            "with its claims (slow: a training per hand-in).",
        ),
    ] = False,
    time_limit: Annotated[
        float, typer.Option(min=0.001, help="Seconds per hand-in; past it, it is rejected.")
    ] = 600.0,
    reports: Annotated[
        bool, typer.Option(help="Write each student's report into DIR/reports/.")
    ] = True,
    data_dir: DataDirOption = None,
) -> None:
    """Verify, measure and grade a class's hand-ins: DIR/gradebook.csv and DIR/class.html."""
    from dlcourse.app.grading import grade as grade_class

    def finished(row: Row) -> None:
        shown = "-" if row.measured is None else f"{row.measured:.4f}"
        points = "" if row.reasons else f", {len(row.flags)} flag(s)" if row.flags else ""
        echo_while_read(
            f"  {row.student} ({row.bundle}): measured {shown}{points}"
            + (f"; rejected: {row.reasons[0]}" if row.reasons else "")
        )

    result = grade_class(
        assignment,
        submissions,
        out=out,
        data_dir=resolve_data_dir(data_dir),
        test_data=test_data,
        jobs=jobs,
        retrain=retrain,
        time_limit=time_limit,
        reports=reports,
        on_row=finished,
    )
    counts = {
        status: sum(row.status == status for row in result.rows)
        for status in ("graded", "flagged", "rejected")
    }
    rate = len(result.rows) / max(result.seconds, 1e-9) * 60
    echo_while_read(
        f"{len(result.rows)} hand-ins in {result.seconds:.1f} s ({rate:.1f} per minute, "
        f"{result.jobs} process{'es' if result.jobs != 1 else ''}; measured on "
        f"{result.measured_on}): " + ", ".join(f"{n} {status}" for status, n in counts.items())
    )
    # the class-wide flags (identical weights, two hand-ins) come only now: every row to look
    # at, with its reasons, as gradebook.csv has them
    for row in result.rows:
        if row.status != "graded":
            echo_while_read(f"{row.status}: {row.student} ({row.bundle}): "
                            + "; ".join(row.reasons or row.flags))  # fmt: skip
    for note in result.notes:
        echo_while_read(f"note: {note}")
    echo_while_read(f"wrote {result.gradebook} and {result.class_page}")
