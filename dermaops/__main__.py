"""``python -m dermaops``: the same as the ``dermaops`` command."""

from dermaops.cli import main

main()
