"""The library behind the commands that use a config or a trained run beyond training: one
module per command, each a function that takes plain arguments and returns data (printing
is the CLI's job)."""
