"""`python -m merge3` is the same as the `merge3` console script."""

from merge3.cli import main

main()
