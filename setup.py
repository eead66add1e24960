"""Puts the course's starter files (configs/ and examples/) into the wheel, as
dlcourse/starter/, where `dlcourse init` finds them; everything else is in pyproject.toml.
(setuptools copies files into a package only from inside it: these live at the repository's
root, where the README's commands use them.)"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

STARTER = ("configs", "examples")  # dlcourse/app/project.py's STARTER


class BuildWithStarter(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "dlcourse" / "starter"
        for name in STARTER:
            shutil.rmtree(target / name, ignore_errors=True)
            ignore = shutil.ignore_patterns("__pycache__", ".*", "*.pyc")
            shutil.copytree(Path(__file__).parent / name, target / name, ignore=ignore)


setup(cmdclass={"build_py": BuildWithStarter})
