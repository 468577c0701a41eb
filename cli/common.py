"""What every command shares: error rendering, secrets, progress bars."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from linkage.agency.secret import parse_secret
from linkage.errors import PprlError, SecretError
from linkage.protocol import Protocol, load_protocol

PROTOCOL_HELP = "The information-sharing protocol (JSON) all parties agreed."

SECRET_ENV = "PPRL_SECRET"  # noqa: S105 - the name of a variable, not a secret


class PprlGroup(click.Group):
    """A click group that turns every :class:`PprlError` into a message and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; render pprl errors on stderr with their exit code."""
        try:
            return super().invoke(ctx)
        except PprlError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exc.exit_code)


def protocol_option(function: Callable[..., Any]) -> Callable[..., Any]:
    """``--protocol FILE``, loaded and validated."""
    return click.option(
        "--protocol",
        "protocol",
        required=True,
        type=click.Path(dir_okay=False, path_type=Path),
        callback=lambda _ctx, _param, value: load_protocol(value),
        help=PROTOCOL_HELP,
    )(function)


def protocol_file_option(function: Callable[..., Any]) -> Callable[..., Any]:
    """``--protocol FILE`` as a path, for a command that loads it itself (see ``pprl encode``)."""
    return click.option(
        "--protocol",
        "protocol_file",
        required=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help=PROTOCOL_HELP,
    )(function)


def read_secret(secret_file: Path | None) -> bytes:
    """The shared secret from --secret-file, else from $PPRL_SECRET; never from argv."""
    if secret_file is not None:
        try:
            text = secret_file.read_text("ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise SecretError(f"{secret_file}: cannot read the secret file ({exc.__class__.__name__})") from exc
        return parse_secret(text, str(secret_file))
    if SECRET_ENV in os.environ:
        return parse_secret(os.environ[SECRET_ENV], f"${SECRET_ENV}")
    raise SecretError(
        f"no secret: pass --secret-file FILE (written by `pprl keygen`) or set {SECRET_ENV}; "
        "a secret is never accepted on the command line"
    )


@contextmanager
def progress(label: str, *, quiet: bool) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr, fed through an ``on_progress(done, total)`` callback."""
    if quiet:
        yield lambda _done, _total: None
        return
    bar: Any = None
    last = 0

    def update(done: int, total: int) -> None:
        nonlocal bar, last
        if bar is None:
            bar = click.progressbar(length=max(total, 1), label=label, file=sys.stderr)
            bar.__enter__()
        bar.update(done - last)
        last = done

    try:
        yield update
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)


def party_ids(protocol: Protocol) -> str:
    """The protocol's party ids, for messages."""
    return ", ".join(p.id for p in protocol.parties)
