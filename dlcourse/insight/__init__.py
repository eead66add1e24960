"""Seeing what the network does: TensorBoard logging and pictures of activations."""
