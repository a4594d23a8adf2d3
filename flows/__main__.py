"""``python -m flows``: the same as the ``circuit-migrate`` command."""

from flows.cli import main

main()
