"""The `forge` executable: `forge up` runs alone (forge/cli_up.py: its process is the
platform's driver, and stays lean), everything else runs the full command line."""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:2] == ["up"]:
        import typer

        from forge.cli_up import up

        command = typer.Typer(add_completion=False)
        command.command()(up)
        sys.argv[1:2] = []  # `forge up --port 1` is the lone command's `--port 1`
        command(prog_name="forge up")
        return
    from forge.cli import app

    app()
