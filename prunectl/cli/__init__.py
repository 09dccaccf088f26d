"""The `prunectl` command line: Typer + rich, thin wrappers over `prunectl.engine`."""
