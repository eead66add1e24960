"""Seeing what the network does while it trains: the probe and its statistics, TensorBoard,
the console, warnings, and the figures every command draws."""
