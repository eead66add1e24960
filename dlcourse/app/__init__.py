"""The application layer: the jobs that wire the packages below into a command (train, resume,
overfit one batch, lr-find, sweeps, several processes). The CLI and the Python API both call
these functions, which take plain arguments and return data."""
