"""`python -m dlcourse` is the same program as `dlcourse`."""

from dlcourse.cli import main

main()
