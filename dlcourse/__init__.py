"""dlcourse: a PyTorch training CLI for the assignments of an introductory deep-learning course."""

__version__ = "0.1.0"
