"""``python -m fedswarm`` is the ``fedswarm`` command."""

from fedswarm.cli.main import main

main()
