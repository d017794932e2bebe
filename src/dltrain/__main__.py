"""`python -m dltrain` runs the command line."""

from .cli import main

main()
