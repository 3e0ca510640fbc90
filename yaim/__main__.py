"""`python -m yaim` is the `yaim` command."""

from yaim.cli import run

run()
