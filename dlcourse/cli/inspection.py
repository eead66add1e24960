"""Commands that look inside a model: `dlcourse forward`, `weights`, `gradcheck` (the numbers
of the lectures) and `visualize-activations` (every layer's output as pictures)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from dlcourse.cli.common import (
    Checkpoint,
    DataDirOption,
    RunArg,
    SetOption,
    Split,
    cli_errors,
    console,
    resolve_data_dir,
)

SourceArg = Annotated[
    Path,
    typer.Argument(
        exists=True, metavar="SOURCE", help="A run folder, or a config (with --weights)."
    ),
]
CheckpointOption = Annotated[
    Checkpoint,
    typer.Option(help="A run's kept weights (summary.json's), its best epoch's, or its last ones."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the same data as JSON.")]


@cli_errors
def forward(
    source: SourceArg,
    input_: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            "-i",
            metavar="VALUE",
            help="The example: NAME=VALUE per input (repeatable), a CSV row of the inputs, "
            "test=INDEX (or train=, dev=), or an image file.",
        ),
    ] = None,
    weights: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="Weights file (.yaml or .safetensors) to use instead of the run's.",
        ),
    ] = None,
    target: Annotated[
        str | None, typer.Option(help="The true class or value: the loss is computed against it.")
    ] = None,
    backward: Annotated[
        bool, typer.Option("--backward", help="Also print dL/dz, dL/dW and dL/db of every layer.")
    ] = False,
    full: Annotated[bool, typer.Option("--full", help="Print every unit of large layers.")] = False,
    check: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            metavar="ANSWERS.yaml",
            help="Check your hand computation (z, a, the loss, dL/dW... per layer; the example "
            "and the target may be in the file): the first wrong value is named with its "
            "formula and the right number; exit 1 when one is wrong.",
        ),
    ] = None,
    checkpoint: CheckpointOption = Checkpoint.kept,
    set_: SetOption = None,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Pass one example through a network and print every layer's numbers.

    z = W a + b and a = g(z) layer by layer, the probabilities, the prediction and the loss
    against --target; --backward adds dL/dz, dL/dW and dL/db; --check compares them with
    yours.
    """  # fmt: skip
    from dlcourse.cli.tables import print_forward
    from dlcourse.tools.forward import forward as run_forward

    if check is not None:
        from dlcourse.cli.tables import print_answers
        from dlcourse.tools.answers import check_answers

        checked = check_answers(
            source, check, data_dir=resolve_data_dir(data_dir), inputs=list(input_ or []),
            weights=weights, target=target, checkpoint=checkpoint.value, overrides=set_,
        )  # fmt: skip
        if as_json:
            _print_json(checked)
        else:
            print_answers(console(), checked)
        if not checked.passed:
            raise typer.Exit(1)  # a wrong answer: not a usage error, not a crash
        return
    result = run_forward(
        source, list(input_ or []), data_dir=resolve_data_dir(data_dir), weights=weights,
        target=target, backward=backward, checkpoint=checkpoint.value, overrides=set_,
    )  # fmt: skip
    if as_json:
        _print_json(result)
    else:
        print_forward(console(), result, full=full)


@cli_errors
def weights(
    run_dir: RunArg,
    layer: Annotated[str | None, typer.Option(help="Print only this layer (fc1, out...).")] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            dir_okay=False,
            help="Export to this new file (.yaml or .safetensors), the "
            "format `forward --weights` reads.",
        ),
    ] = None,
    full: Annotated[
        bool, typer.Option("--full", help="Print every value of large tensors.")
    ] = False,
    checkpoint: CheckpointOption = Checkpoint.kept,
    as_json: JsonOption = False,
) -> None:
    """Print a trained model's weights, or export them to a file that `forward` reads."""
    from dlcourse.cli.tables import print_weights
    from dlcourse.tools.weights import model_weights

    result = model_weights(run_dir, checkpoint=checkpoint.value, layer=layer, out=out)
    if as_json:
        _print_json(result)
    elif result.written:
        typer.echo(f"wrote the weights of {result.source} to {result.written}; read them with "
                   f"dlcourse forward SOURCE --weights {result.written}")  # fmt: skip
    else:
        print_weights(console(), result, full=full)


@cli_errors
def gradcheck(
    source: Annotated[
        Path,
        typer.Argument(
            exists=True,
            metavar="CONFIG|RUN_DIR",
            help="A config (its seeded initialization) or a run folder (its weights).",
        ),
    ],
    set_: SetOption = None,
    batch: Annotated[int, typer.Option(min=1, max=256, help="Training examples in J.")] = 8,
    samples: Annotated[
        int, typer.Option(min=1, max=1000, help="Entries checked per parameter tensor.")
    ] = 10,
    checkpoint: CheckpointOption = Checkpoint.kept,
    function: Annotated[
        str | None,
        typer.Option(
            metavar="FILE.py[:NAME]",
            help="Your own torch.autograd.Function (a sigmoid or ReLU: forward(ctx, x); a "
            "linear layer: forward(ctx, x, weight, bias)) in place of the model's activation "
            "or dense layers, so that its backward is checked. The file runs as Python: give "
            "only your own (dlcourse never runs code from configs, runs or hand-ins).",
        ),
    ] = None,
    full: Annotated[
        bool, typer.Option("--full", help="Print both gradients of every entry checked.")
    ] = False,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check backpropagation against finite differences; exit 1 when a gradient fails.

    Backpropagation's gradient of the full cost (loss and penalty) against central
    differences, per parameter tensor, in float64, with the two values of the entry where
    they differ most. Exit 0 when every tensor passes, 1 when any fails. --function checks
    your own backward.
    """
    from dlcourse.cli.tables import print_gradcheck
    from dlcourse.tools.gradcheck import gradient_check

    result = gradient_check(
        source, data_dir=resolve_data_dir(data_dir), overrides=set_,
        checkpoint=checkpoint.value, batch=batch, samples=samples, function=function,
    )  # fmt: skip
    if as_json:
        _print_json(result)
    else:
        print_gradcheck(console(), result, full=full)
    if not result.passed:
        raise typer.Exit(1)  # the check failed: not a usage error, not a crash


def _print_json(result: Any) -> None:
    typer.echo(json.dumps(dataclasses.asdict(result), indent=2))


# ------------------------------------------------------------------ visualize-activations


@cli_errors
def visualize_activations(
    run_dir: RunArg,
    index: Annotated[
        list[int] | None,
        typer.Option(help="Example to show, by position in the split (repeatable)."),
    ] = None,
    split: Annotated[Split, typer.Option(help="The split the examples come from.")] = Split.test,
    checkpoint: Annotated[
        Checkpoint,
        typer.Option(
            help="The weights the run kept (summary.json's), the best epoch's, or the last ones."
        ),
    ] = Checkpoint.kept,
    out: Annotated[
        Path | None, typer.Option(help="Where the PNGs go (default: RUN_DIR/activations/).")
    ] = None,
    hidden_space: Annotated[
        bool,
        typer.Option(
            "--hidden-space",
            help="Instead: every example of the split as a point in the input space and in "
            "the last hidden layer's space (PCA to 2-D), coloured by class, with how well a "
            "linear classifier separates them in each.",
        ),
    ] = False,
    data_dir: DataDirOption = None,
) -> None:
    """Draw the output of every layer for a few examples, one PNG per layer; or (--hidden-space)
    the examples in the last hidden layer's space."""
    from dlcourse.tools.visualize import visualize_run

    if hidden_space:
        from dlcourse.errors import UserError
        from dlcourse.tools.visualize import hidden_space_lines, visualize_hidden_space

        if index:
            raise UserError("--index picks the examples of the layer pictures; --hidden-space "
                            "draws every example of the split")  # fmt: skip
        space = visualize_hidden_space(
            run_dir, data_dir=resolve_data_dir(data_dir), checkpoint=checkpoint.value,
            split=split.value, out=out,
        )  # fmt: skip
        for line in hidden_space_lines(space):
            console().print(line, highlight=False)
        return
    visualize_run(
        run_dir, data_dir=resolve_data_dir(data_dir), console=console(),
        checkpoint=checkpoint.value, split=split.value, indices=index, out=out,
    )  # fmt: skip


# ------------------------------------------------------------------ landscape


@cli_errors
def landscape(
    run_dir: RunArg,
    other: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            file_okay=False,
            metavar="RUN_DIR",
            help="Another run of the same network (e.g. another seed): also draw the loss on "
            "the straight line between the two runs' weights, and its barrier.",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Where the PNGs go (default: RUN_DIR/landscape/).")
    ] = None,
    points: Annotated[
        int, typer.Option(help="Points along the direction, from -1 to 1 (5 to 401).")
    ] = 41,
    grid: Annotated[int, typer.Option(help="Points per side of the plane (5 to 101).")] = 21,
    examples: Annotated[
        int, typer.Option(help="Training examples the loss is measured on (a fixed sample).")
    ] = 2000,
    seed: Annotated[int, typer.Option(help="Seed of the random directions.")] = 0,
    checkpoint: CheckpointOption = Checkpoint.kept,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Draw the loss J(W) around a run's weights, and between two runs (--other).

    Along one and two random filter-normalized directions (Li et al. 2018) around the kept
    weights: a curve and a contour map. With --other, along the straight line to another
    run's weights: two seeds give two minima, and the barrier between them.
    """
    from dlcourse.tools.landscape import landscape as measure

    result = measure(
        run_dir, data_dir=resolve_data_dir(data_dir), other=other, out=out, points=points,
        grid=grid, examples=examples, seed=seed, checkpoint=checkpoint.value,
    )  # fmt: skip
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
        return
    from dlcourse.cli.tables import print_landscape

    print_landscape(console(), result)
