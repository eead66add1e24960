"""dlcourse's version: the one place it is kept (pyproject.toml reads it from here, and
`dlcourse.__version__`, `dlcourse --version` and every run's environment.json show it)."""

__version__ = "0.1.0"
