"""`dlcourse config validate|show`: check a config, or print it fully resolved."""

from __future__ import annotations

import typer

from dlcourse.cli.common import ConfigArg, SetOption, cli_errors


@cli_errors
def validate(config: ConfigArg, set_: SetOption = None) -> None:
    """Check a config; print every problem as `key: message` (exit 2 when there is one)."""
    from dlcourse.config import load_config

    cfg = load_config(config, set_ or [])
    typer.echo(f"{config}: valid ({cfg.task}, {cfg.train.epochs} epochs, {cfg.optim.name})")


@cli_errors
def show(config: ConfigArg, set_: SetOption = None) -> None:
    """Print the config with every default filled in, the overrides applied, and what each
    key means."""
    from dlcourse.config import describe_config, load_config

    typer.echo(describe_config(load_config(config, set_ or [])), nl=False)
