"""The docs cannot go stale: the generated references name every command, option and config
key; the README gives every command a line; every output a page includes is one that
docs/examples.py writes, and every output it writes is shown somewhere.

`make docs` (mkdocs build --strict) checks the links and the includes of the built site; these
tests check the content without mkdocs installed."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import typing
from types import ModuleType
from typing import Any

import pytest
import typer.main
from pydantic import BaseModel

from dlcourse.cli import app
from dlcourse.config import Config
from tests.conftest import REPO

DOCS = REPO / "docs"
INCLUDE = re.compile(r'^\s*--8<-- "([^"]+)"\s*$', re.MULTILINE)


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docs_{name}", DOCS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (dataclasses look their module up there)
    spec.loader.exec_module(module)
    return module


def every_command() -> list[tuple[str, Any, Any]]:
    """(path, command, context) of every command that runs something, found here on its own
    (not through the generator) from the Typer app's click tree."""
    found = []

    def walk(command: Any, path: str, parent: Any) -> None:
        context = command.context_class(command, info_name=path.split()[-1], parent=parent)
        if not hasattr(command, "list_commands"):
            found.append((path, command, context))
            return
        for name in command.list_commands(context):
            walk(command.get_command(context, name), f"{path} {name}", context)

    walk(typer.main.get_command(app), "dlcourse", None)
    return found


def every_key(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key of a config model; a list of sections' keys as `key[].inner`."""
    keys = []
    for name, field in model.model_fields.items():
        keys.append(f"{prefix}{name}")
        annotation = field.annotation
        for candidate in [annotation, *nested_types(annotation)]:
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                listed = "[]" if "list[" in str(annotation) else ""  # model.conv[].channels
                keys += every_key(candidate, f"{prefix}{name}{listed}.")
                break
    return keys


def nested_types(annotation: Any) -> list[Any]:
    found = []
    for arg in typing.get_args(annotation):
        found += [arg, *nested_types(arg)]
    return found


def test_the_cli_reference_has_every_command_and_option() -> None:
    text = load("gen_reference").cli_reference()
    commands = every_command()
    assert len(commands) >= 16
    for path, command, context in commands:
        assert re.search(rf"^#+ {re.escape(path)} ", text, re.MULTILINE), path
        assert command.get_usage(context).removeprefix("Usage: ") in text, path
        for param in command.get_params(context):
            if param.name != "help":
                assert param.get_help_record(context)[0] in text, f"{path}: {param.name}"


def test_the_config_reference_has_every_key() -> None:
    text = load("gen_reference").config_reference()
    keys = every_key(Config)
    assert {"optim.lr", "train.early_stopping.patience", "model.conv[].channels"} <= set(keys)
    missing = [key for key in keys if f"| `{key}` |" not in text]
    assert missing == []
    # each optimizer's and schedule's formula, as config show prints them
    assert "W = W - lr dW" in text and "lr_t = lr gamma^floor(t / step_size)" in text


def test_the_readme_gives_every_command_a_line() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    missing = [path for path, _, _ in every_command() if f"{path} " not in readme]
    assert missing == [], "add a line for each to the README's list of commands"


def test_every_included_output_is_made_by_the_examples_script_and_shown() -> None:
    examples = load("examples")
    made = {f"{example.name}.txt" for example in examples.EXAMPLES}
    made |= {"machine.md", *examples.SCRIPTS}  # the scripts the pages show, and run
    included: set[str] = set()
    for page in DOCS.rglob("*.md"):
        if "snippets" not in page.parts:
            included |= set(INCLUDE.findall(page.read_text(encoding="utf-8")))
    assert included - made == set(), "included, but docs/examples.py does not write them"
    assert made - included == set(), "written by docs/examples.py, but no page shows them"


@pytest.mark.parametrize("name", ["gen_reference", "examples"])
def test_the_docs_scripts_do_not_import_torch_at_load(name: str) -> None:
    """Building the docs makes the references without importing torch (fast, and possible
    where torch is not installed yet)."""
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('m', {str(DOCS / (name + '.py'))!r})\n"
        "module = importlib.util.module_from_spec(spec); sys.modules['m'] = module\n"
        "spec.loader.exec_module(module)\n"
        "if hasattr(module, 'cli_reference'): module.cli_reference(); module.config_reference()\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "False", out.stderr


def test_the_snippets_are_there() -> None:
    """docs/snippets/ is committed: `make docs` builds from it without running anything."""
    included: set[str] = set()
    for page in DOCS.rglob("*.md"):
        if "snippets" not in page.parts:
            included |= set(INCLUDE.findall(page.read_text(encoding="utf-8")))
    assert {"machine.md", "train_mnist.txt", "forward_worked.txt"} <= included
    missing = sorted(name for name in included if not (DOCS / "snippets" / name).is_file())
    assert missing == [], "run make docs-examples (python docs/examples.py NAME...)"
