"""`dlcourse landscape`: the loss J(W) around a run's kept weights, and between two runs.

A network has thousands of weights, so its loss surface is drawn along chosen directions:

- around the kept weights W, along one random direction D1 (a curve of J(W + a D1)) and over
  the plane of two (a contour map of J(W + a D1 + b D2)), for a and b from -1 to 1;
- with `--other RUN`, along the straight line from one run's weights W_A to another's W_B,
  J(W_A + t (W_B - W_A)), t from -0.25 to 1.25: two seeds give two minima, and the line shows
  whether a barrier lies between them (linear mode connectivity).

The random directions are filter-normalized, as in Li et al. 2018, "Visualizing the Loss
Landscape of Neural Nets": each filter of a direction (a row of a weight matrix, an output
channel of a conv kernel) is scaled to the norm of the same filter of the weights, so that a
step of 1 moves every filter by its own size, whatever the scale of its layer. Biases and
batch-norm parameters (1-D tensors) are 0 in the directions (held at their trained values);
batch-norm's running statistics stay as trained (on the line, they are interpolated too).

The loss is the run's own (training.losses.loss_for: its train.loss, without the L2/L1
penalty, as summary.json reports it), in eval mode (no dropout), on a fixed sample of the
training split: the examples summary.json's train metrics are measured on (training's
train_sample rule), at most `examples` of them. So the loss at the centre is summary.json's
train loss when the sample is the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dlcourse.errors import UserError
from dlcourse.fileio import make_folder
from dlcourse.insight.figures import figure_pixels, new_figure, save_png, wrapped
from dlcourse.tools.trained import TrainedRun, open_run
from dlcourse.training.losses import loss_for, loss_text
from dlcourse.training.metrics import TRAIN_SAMPLE, train_sample

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

POINTS = 41  # along a direction: a from -1 to 1 in steps of 0.05
GRID = 21  # per side of the plane: steps of 0.1
LINE_POINTS = 61  # along the line between two runs: t from -0.25 to 1.25 in steps of 0.025
LINE_START, LINE_END = -0.25, 1.25
EXAMPLES = 2_000  # training examples measured (a fixed sample of the training split)
CONVENTION = (
    "random directions, filter-normalized (Li et al. 2018): each filter (a row of a weight "
    "matrix, an output channel of a conv kernel) scaled to the norm of the same filter of the "
    "weights; biases and batch-norm parameters are 0 in the directions (held as trained)"
)


@dataclass
class Line:
    """The loss along the straight line between two runs' weights, W_A + t (W_B - W_A)."""

    other: str  # the other run and its weights, for the user
    t: list[float]
    loss: list[float]
    start: float  # J at t = 0 (this run's weights)
    end: float  # J at t = 1 (the other run's)
    lowest: float  # the lowest J for t in [0, 1]
    lowest_t: float
    highest: float  # the highest J for t in [0, 1]
    highest_t: float
    barrier: float  # max over t in [0, 1] of J(t) - (J(0) + t (J(1) - J(0))): 0 when flat
    notes: list[str] = field(default_factory=list)


@dataclass
class Landscape:
    run: str  # the run folder
    weights: str  # which weights are the centre
    loss: str  # which loss, in words
    examples: int  # training examples measured
    of: int  # in the training split
    convention: str  # how the directions are made
    seed: int  # of the random directions
    alphas: list[float]  # the steps a along direction 1 (and the plane's axes: grid)
    curve: list[float]  # J(W + a D1)
    grid: list[float]  # the steps a (direction 1) and b (direction 2) of the plane
    surface: list[list[float]]  # J(W + a D1 + b D2), [b index][a index]
    centre: float  # J(W)
    curve_min: float
    curve_min_at: float  # a
    surface_min: float
    surface_min_at: tuple[float, float]  # (a, b)
    line: Line | None = None
    written: list[Path] = field(default_factory=list)
    not_logged: str | None = None  # why TensorBoard has not got the pictures
    figures: dict[str, Any] = field(default_factory=dict, repr=False)  # file name -> Figure

    def to_json(self) -> dict[str, Any]:
        """The numbers (no figures), JSON-able."""
        from dataclasses import asdict

        data = asdict(self)
        data.pop("figures")
        data["written"] = [str(path) for path in self.written]
        return data

    @property
    def centred(self) -> bool:
        """Whether the lowest loss of the curve and of the plane is at the weights, to within
        one grid step: the weights sit at the bottom of the valley."""
        step_a, step_g = self.alphas[1] - self.alphas[0], self.grid[1] - self.grid[0]
        a, b = self.surface_min_at
        return abs(self.curve_min_at) <= step_a + 1e-9 and max(abs(a), abs(b)) <= step_g + 1e-9

    @property
    def figure(self) -> Figure:
        """Every panel in one figure: the curve, the contour map, and the line (--other)."""
        panels = 3 if self.line is not None else 2
        figure = new_figure(5.2 * panels, 4.4)
        axes = figure.subplots(1, panels)
        draw_curve(axes[0], self)
        draw_surface(figure, axes[1], self)
        if self.line is not None:
            draw_line(axes[2], self.line, self)
        figure.suptitle(wrapped(f"{self.run}: {self.weights}", 5.2 * panels), fontsize=11)
        return figure


# ------------------------------------------------------------------ the computation


class Probe:
    """A run's model and its loss on a fixed sample of its training split, evaluated at any
    weights set into the model; the trained weights are put back by `restore`."""

    def __init__(self, opened: TrainedRun, data_dir: Path, examples: int):
        data = opened.load_data(data_dir)
        train = data.splits["train"]
        sample = train_sample(train, min(examples, TRAIN_SAMPLE))
        self.opened, self.x, self.y = opened, sample.x, sample.y
        self.of = len(train)
        self.loss_fn = loss_for(opened.cfg, data.kind)
        self.loss_name = loss_text(opened.cfg, data.kind)
        self.names = [name for name, _ in opened.model.named_parameters()]
        self.trained = {k: v.detach().clone() for k, v in opened.model.state_dict().items()}

    @torch.no_grad()
    def loss_at(self, state: dict[str, torch.Tensor]) -> float:
        """J at the weights `state` (a state dict, or some of its tensors)."""
        self.opened.model.load_state_dict(state, strict=False)
        outputs = self.opened.outputs(self.x)
        return float(self.loss_fn(outputs, self.y))

    def restore(self) -> None:
        self.opened.model.load_state_dict(self.trained)


def filter_normalized(weights: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """A random direction (a tensor per parameter), filter-normalized: each filter (slice
    along dimension 0 of a weight of 2 or more dimensions) scaled to the norm of that filter of
    the weights; 1-D parameters (biases, batch-norm) are 0."""
    generator = torch.Generator().manual_seed(seed)
    direction = {}
    for name, weight in weights.items():
        d = torch.randn(weight.shape, generator=generator, dtype=torch.float64)
        if weight.dim() < 2:
            direction[name] = torch.zeros_like(weight)
            continue
        w = weight.double().flatten(1)  # (filters, values per filter)
        flat = d.flatten(1)
        flat *= (w.norm(dim=1) / flat.norm(dim=1).clamp(min=1e-12)).unsqueeze(1)
        direction[name] = flat.view(weight.shape).to(weight.dtype)
    return direction


def along(
    probe: Probe,
    centre: dict[str, torch.Tensor],
    steps: list[tuple[float, float]],
    d1: dict[str, torch.Tensor],
    d2: dict[str, torch.Tensor] | None = None,
) -> list[float]:
    """J(centre + a d1 + b d2) at each (a, b)."""
    losses = []
    for a, b in steps:
        state = {name: centre[name] + a * d1[name] + (b * d2[name] if d2 else 0) for name in d1}
        losses.append(probe.loss_at(state))
    return losses


def landscape(
    run_dir: Path,
    *,
    data_dir: Path,
    other: Path | None = None,
    out: Path | None = None,
    points: int = POINTS,
    grid: int = GRID,
    examples: int = EXAMPLES,
    seed: int = 0,
    checkpoint: str = "kept",
) -> Landscape:
    """`dlcourse landscape`: the loss around a run's weights along one and two random
    filter-normalized directions, and (other) along the line to another run's weights. The
    PNGs go to `out` (default RUN_DIR/landscape/) and to the run's TensorBoard."""
    check_options(points, grid, examples, seed)
    opened = open_run(run_dir, checkpoint)
    probe = Probe(opened, data_dir, examples)
    try:
        result = measure(probe, run_dir, points, grid, seed)
        if other is not None:
            result.line = line_to(probe, open_run(other, checkpoint), other)
    finally:
        probe.restore()
    result.figures = draw(result)
    write(result, opened, run_dir, out)
    return result


def check_options(points: int, grid: int, examples: int, seed: int) -> None:
    if not 5 <= points <= 401:
        raise UserError(f"--points {points}: from 5 to 401 points along a direction")
    if not 5 <= grid <= 101:
        raise UserError(f"--grid {grid}: from 5 to 101 points per side of the plane")
    if not 1 <= examples <= TRAIN_SAMPLE:
        raise UserError(f"--examples {examples}: from 1 to {TRAIN_SAMPLE:,} training examples")
    if not 0 <= seed < 2**63:
        raise UserError(f"--seed {seed}: a seed is a whole number from 0 to 2^63 - 1")


def measure(probe: Probe, run_dir: Path, points: int, grid: int, seed: int) -> Landscape:
    """The curve along direction 1 and the plane of directions 1 and 2."""
    centre = {name: probe.trained[name] for name in probe.names}
    d1 = filter_normalized(centre, seed)
    d2 = filter_normalized(centre, seed + 1)  # (independent of d1: another stream)
    alphas = [
        round(a, 12) + 0.0 for a in torch.linspace(-1, 1, points, dtype=torch.float64).tolist()
    ]
    curve = along(probe, centre, [(a, 0.0) for a in alphas], d1)
    axis = [round(a, 12) + 0.0 for a in torch.linspace(-1, 1, grid, dtype=torch.float64).tolist()]
    flat = along(probe, centre, [(a, b) for b in axis for a in axis], d1, d2)
    surface = [flat[row * grid : (row + 1) * grid] for row in range(grid)]
    at = min(range(len(flat)), key=flat.__getitem__)
    lowest = min(range(points), key=curve.__getitem__)
    opened = probe.opened
    return Landscape(
        run=str(run_dir), weights=opened.weights, loss=probe.loss_name, examples=len(probe.y),
        of=probe.of, convention=CONVENTION, seed=seed, alphas=alphas, curve=curve, grid=axis,
        surface=surface, centre=probe.loss_at(centre), curve_min=curve[lowest],
        curve_min_at=alphas[lowest], surface_min=flat[at],
        surface_min_at=(axis[at % grid], axis[at // grid]),
    )  # fmt: skip


def line_to(probe: Probe, other: TrainedRun, other_dir: Path) -> Line:
    """J along W_A + t (W_B - W_A), every floating tensor of the state (batch-norm's running
    statistics too) interpolated; W_B = W_A gives the same loss at every t."""
    start, end = probe.trained, other.model.state_dict()
    mismatch = [
        f"{name} {tuple(value.shape)} vs {tuple(end[name].shape) if name in end else 'none'}"
        for name, value in start.items()
        if name not in end or end[name].shape != value.shape
    ]
    if mismatch or len(end) != len(start):
        raise UserError(
            f"--other {other_dir}: its network is not the same as this run's "
            f"({'; '.join(mismatch[:3]) or 'other layers'}); the line between two runs needs "
            "the same model.* keys"
        )
    notes = data_notes(probe.opened, other)
    ts = [LINE_START + i * (LINE_END - LINE_START) / (LINE_POINTS - 1) for i in range(LINE_POINTS)]
    floating = [name for name, value in start.items() if value.is_floating_point()]
    losses = []
    for t in ts:
        state = {name: start[name] + t * (end[name] - start[name]) for name in floating}
        losses.append(probe.loss_at(state))
    inside = [i for i, t in enumerate(ts) if -1e-9 <= t <= 1 + 1e-9]
    first, last = losses[inside[0]], losses[inside[-1]]
    excess = [losses[i] - (first + ts[i] * (last - first)) for i in inside]  # (exact when flat)
    low = min(inside, key=losses.__getitem__)
    high = max(inside, key=losses.__getitem__)
    return Line(
        other=f"{other_dir}, {other.weights}", t=ts, loss=losses, start=first, end=last,
        lowest=losses[low], lowest_t=ts[low], highest=losses[high], highest_t=ts[high],
        barrier=max(0.0, max(excess)), notes=notes,
    )  # fmt: skip


def data_notes(this: TrainedRun, other: TrainedRun) -> list[str]:
    """What differs between the two runs' problems: the line is measured on this run's data."""
    notes = []
    if this.cfg.task != other.cfg.task:
        notes.append(f"the runs are of different tasks ({this.cfg.task}, {other.cfg.task})")
    elif this.cfg.data != other.cfg.data or this.cfg.data_seed != other.cfg.data_seed:
        notes.append(
            f"the runs were trained on different data or splits (data seed "
            f"{this.cfg.data_seed} and {other.cfg.data_seed}); both are measured on this run's "
            "training sample. Set data.seed to train two seeds on one problem"
        )
    return notes


# ------------------------------------------------------------------ pictures


def draw(result: Landscape) -> dict[str, Figure]:
    """A figure per picture: landscape_1d.png, landscape_2d.png, landscape_line.png."""
    figures = {}
    figure = new_figure(6, 4.4)
    draw_curve(figure.add_subplot(), result)
    figures["landscape_1d.png"] = figure
    figure = new_figure(6, 5)
    draw_surface(figure, figure.add_subplot(), result)
    figures["landscape_2d.png"] = figure
    if result.line is not None:
        figure = new_figure(6.5, 4.6)
        draw_line(figure.add_subplot(), result.line, result)
        figures["landscape_line.png"] = figure
    return figures


def _scaled(axes: Axes, values: list[float]) -> None:
    """A log axis when the losses span more than a factor of 30 (a diverging edge would
    otherwise flatten the valley where the weights are)."""
    finite = [v for v in values if math.isfinite(v)]
    if finite and min(finite) > 0 and max(finite) / min(finite) > 30:
        axes.set_yscale("log")


def draw_curve(axes: Axes, result: Landscape) -> None:
    axes.plot(result.alphas, result.curve, color="tab:blue", marker=".", markersize=3)
    axes.axvline(0, color="grey", linestyle="--", linewidth=1)
    axes.plot([0], [result.centre], marker="*", color="black", markersize=11, linestyle="none",
              label=f"the weights: {result.centre:.4g}")  # fmt: skip
    if result.curve_min_at != 0:
        label = f"lowest: {result.curve_min:.4g} at a = {result.curve_min_at:.2f}"
        axes.plot([result.curve_min_at], [result.curve_min], marker="v", color="tab:red",
                  linestyle="none", label=label)  # fmt: skip
    _scaled(axes, result.curve)
    axes.set(xlabel="a: step along a random filter-normalized direction D1",
             ylabel="loss J(W + a D1)")  # fmt: skip
    axes.set_title(f"loss along one direction ({result.examples:,} training examples)",
                   fontsize=10)  # fmt: skip
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)


def draw_surface(figure: Figure, axes: Axes, result: Landscape) -> None:
    import numpy as np
    from matplotlib.colors import LogNorm
    from matplotlib.ticker import LogFormatterSciNotation

    values = np.array(result.surface, dtype=float)
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if low > 0 and high / low > 30:  # many orders of magnitude: equal steps of log(J)
        levels = np.geomspace(low, high, 25)
        image = axes.contourf(result.grid, result.grid, values, levels=levels, cmap="viridis",
                              norm=LogNorm(low, high))  # fmt: skip
        axes.contour(result.grid, result.grid, values, levels=levels[::3], colors="white",
                     linewidths=0.5)  # fmt: skip
    else:
        image = axes.contourf(result.grid, result.grid, values, levels=25, cmap="viridis")
        axes.contour(result.grid, result.grid, values, levels=8, colors="white", linewidths=0.5)
    bar = figure.colorbar(image, ax=axes, label="loss J(W + a D1 + b D2)", shrink=0.85)
    if isinstance(image.norm, LogNorm):  # ticks at powers of ten, not at the 25 levels
        powers = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
        bar.set_ticks([10.0**k for k in powers if low <= 10.0**k <= high], labels=None)
        bar.ax.yaxis.set_major_formatter(LogFormatterSciNotation())
        bar.ax.minorticks_off()
    axes.plot([0], [0], marker="*", color="white", markeredgecolor="black", markersize=14,
              linestyle="none", label=f"the weights: {result.centre:.4g}")  # fmt: skip
    a, b = result.surface_min_at
    axes.plot([a], [b], marker="x", color="tab:red", markersize=9, markeredgewidth=2,
              linestyle="none", label=f"lowest on the grid: {result.surface_min:.4g}")  # fmt: skip
    axes.set(xlabel="a (direction D1)", ylabel="b (direction D2)", aspect="equal")
    axes.set_title("loss on the plane of two directions", fontsize=10)
    axes.legend(fontsize=8, loc="upper right")


def draw_line(axes: Axes, line: Line, result: Landscape) -> None:
    axes.plot(line.t, line.loss, color="tab:blue", marker=".", markersize=3)
    axes.plot([0, 1], [line.start, line.end], color="grey", linestyle="--", linewidth=1,
              label="straight line between the two losses")  # fmt: skip
    axes.plot([0], [line.start], marker="*", color="black", markersize=11, linestyle="none",
              label=f"t = 0, this run: {line.start:.4g}")  # fmt: skip
    axes.plot([1], [line.end], marker="*", color="tab:orange", markersize=11, linestyle="none",
              label=f"t = 1, the other run: {line.end:.4g}")  # fmt: skip
    if line.barrier > 0:
        axes.annotate(f"barrier {line.barrier:.3g}", (line.highest_t, line.highest),
                      textcoords="offset points", xytext=(8, -4), fontsize=8)  # fmt: skip
    _scaled(axes, line.loss)
    axes.set(xlabel="t: W = W_this + t (W_other - W_this)", ylabel="loss")
    axes.set_title(f"loss between two runs' weights ({result.examples:,} training examples)",
                   fontsize=10)  # fmt: skip
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="upper left")


def write(result: Landscape, opened: TrainedRun, run_dir: Path, out: Path | None) -> None:
    """The PNGs into `out` (default the run's landscape/), and to the run's TensorBoard."""
    root = run_dir if out is None else out
    assert opened.folder is not None
    target = make_folder(out or run_dir / "landscape", root)
    for name, figure in result.figures.items():
        path = target / name
        save_png(figure, path, root=root)
        result.written.append(path)
    if not opened.cfg.logging.tensorboard:
        result.not_logged = "logging.tensorboard is false for this run"
        return
    from torch.utils.tensorboard import SummaryWriter

    try:
        folder = opened.folder.folder(opened.folder.tensorboard)
        with SummaryWriter(log_dir=str(folder)) as writer:
            for name, figure in result.figures.items():
                tag = f"landscape/{name.removesuffix('.png').removeprefix('landscape_')}"
                writer.add_image(tag, figure_pixels(figure), opened.epoch or 0)
    except (UserError, OSError) as exc:
        result.not_logged = f"TensorBoard: {exc}"
