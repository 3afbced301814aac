"""The ``lorakit`` command and its global options.

Each command lives in its own module and is registered below. Library errors
(:class:`lorakit.errors.LorakitError`) end the command with their message on
stderr and exit code 1; usage errors exit with 2, as click does.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from lorakit.cli import inspect_cmd, predict_cmd
from lorakit.cli import combine_cmd, compare_cmd, merge_cmd
from lorakit.cli import train_cmd
from lorakit.cli import demo_cmd
from lorakit.errors import LorakitError
from lorakit.logging_setup import configure_logging

def _flag_display_type(option: typer.core.TyperOption, ctx: typer.Context) -> str | None:
    """Show no ``<bool>`` or ``<int>`` type beside a flag or a counted option, which take no value."""
    if option.is_flag or option.count:
        return None
    return typer.core.TyperOption.display_type(option, ctx)


# typer 0.29 prints the type of every option, flags included, so ``--json <bool>`` reads
# as if it took a value.
typer.core.TyperOption.display_type_rich = _flag_display_type

app = typer.Typer(
    name="lorakit",
    help="Load, combine, route, merge and train many LoRA adapters on one base model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _global_options(
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More logging: -v for DEBUG, -vv adds library logs.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors; no progress bars.")] = False,
) -> None:
    configure_logging(verbose=verbose, quiet=quiet)


app.command(name="inspect")(inspect_cmd.inspect)
app.command(name="predict")(predict_cmd.predict)
app.command(name="combine")(combine_cmd.combine)
app.command(name="merge")(merge_cmd.merge)
app.command(name="compare")(compare_cmd.compare)
app.command(name="train")(train_cmd.train)
app.command(name="demo")(demo_cmd.demo)


def main(argv: list[str] | None = None) -> None:
    """Run the command line; the console script ``lorakit`` calls this."""
    try:
        app(args=argv, prog_name="lorakit", standalone_mode=True)
    except LorakitError as err:
        typer.echo(f"Error: {err}", err=True)
        sys.exit(1)
