"""The rankwise command line. Heavy libraries are imported inside the commands."""

from __future__ import annotations

import signal
import sys
from typing import Annotated

import typer

from .errors import Terminated, one_line

app = typer.Typer(
    name="rankwise",
    help="Low-rank decompositions, completion and reduced-order bases from array files.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rich markup would eat the "[default: …]" texts
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool):
    if value:
        from .runtime import rankwise_version

        typer.echo(f"rankwise {rankwise_version()}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Low-rank decompositions, completion and reduced-order bases from array files."""


def _register() -> None:
    from .complete import complete
    from .info import info
    from .matrix import cur, kpsvd, nmf
    from .plot import plot
    from .results import error, reconstruct, report
    from .rob import app as rob_app
    from .svd import svd
    from .tensor import cp, tt, tucker

    app.command("info")(info)
    app.command("svd")(svd)
    app.command("nmf")(nmf)
    app.command("cur")(cur)
    app.command("kpsvd")(kpsvd)
    app.command("cp")(cp)
    app.command("tucker")(tucker)
    app.command("tt")(tt)
    app.command("complete")(complete)
    app.add_typer(rob_app, name="rob")
    app.command("reconstruct")(reconstruct)
    app.command("error")(error)
    app.command("report")(report)
    app.command("plot")(plot)


_register()


def _on_sigterm(signum, frame):
    raise Terminated()


def _quiet_libraries(argv: list[str]) -> None:
    """Expected errors are one line: library warnings (numpy overflow, asyncio tasks torn
    down by zarr on a failed read) would add more. --debug keeps them."""
    if "--debug" in argv:
        return
    import logging
    import warnings

    warnings.simplefilter("ignore")
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)


def main(argv: list[str] | None = None) -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)
    _quiet_libraries(sys.argv[1:] if argv is None else argv)
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="rankwise", standalone_mode=False)
    except Exception as exc:  # click-style usage errors carry exit_code and format_message
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `rankwise`: the help, as usage
            sys.stdout.write(exc.format_message().rstrip() + "\n")
            sys.exit(exc.exit_code)
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
            ctx = getattr(exc, "ctx", None)
            path = ctx.command_path if ctx is not None else "rankwise"
            sys.stderr.write(
                f"{path}: error: {one_line(exc.format_message())} (see '{path} --help')\n"
            )
            sys.exit(exc.exit_code)
        raise
    except KeyboardInterrupt:
        sys.stderr.write("rankwise: interrupted\n")
        sys.exit(130)
    except Terminated:
        sys.exit(143)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
