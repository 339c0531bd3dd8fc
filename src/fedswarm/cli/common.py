"""Helpers shared by CLI commands: error reporting, consoles, locating bundled examples."""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import NoReturn, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fedswarm.core.errors import FedswarmError

__all__ = ["err_console", "example_path", "fail", "guarded", "progress_bars"]

err_console = Console(stderr=True, highlight=False)
T = TypeVar("T")


def progress_bars(info: str, *, quiet: bool) -> Progress:
    """Progress bars on stderr: description, bar, done/total, ``info`` (a rich column template), elapsed time;
    none with ``quiet``."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(info),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
        disable=quiet,
    )


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", markup=True, soft_wrap=True)
    raise typer.Exit(code)


def guarded(fn: Callable[[], T]) -> T:
    """Run ``fn``; turn fedswarm's errors into a one-line message and a non-zero exit code."""
    try:
        return fn()
    except FedswarmError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", 130)


def example_path(name: str) -> Path:
    """Path of a bundled example spec (``hospitals.toml`` ...), installed or in a source checkout."""
    try:
        candidate = resources.files("fedswarm") / "examples" / name
        if candidate.is_file():
            return Path(str(candidate))
    except (ModuleNotFoundError, FileNotFoundError):
        pass
    here = Path(__file__).resolve()
    for parent in here.parents:
        p = parent / "examples" / name
        if p.is_file():
            return p
    fail(f"bundled example {name!r} not found (is the installation complete?)")


def stdout_is_tty() -> bool:
    return sys.stdout.isatty()
