"""`python -m prunectl` runs the CLI."""

from prunectl.cli.app import main

main()
