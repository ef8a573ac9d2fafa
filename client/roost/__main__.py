"""`python -m roost`: the `roost` CLI, for when the console script is not on PATH (a venv not
activated, `pipx run`, an embedded interpreter). `roost` is a PEP 420 namespace package over
three source roots; runpy finds this `__main__` in the client's portion of it."""
import sys

from roost.client.cli import main

if __name__ == "__main__":
    sys.exit(main())
