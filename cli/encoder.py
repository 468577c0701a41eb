"""`pprl encoder`: the encoder page, served on 127.0.0.1 for people who never use a terminal."""

from __future__ import annotations

import secrets
import shutil
import socket
import tempfile
import webbrowser
from pathlib import Path

import click

from cli.common import read_secret
from linkage.protocol import load_protocol


@click.command()
@click.option(
    "--out-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("pprl-encoded"),
    show_default=True,
    help="Folder in which each encoding gets a new folder.",
)
@click.option(
    "--protocol",
    "protocol_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Load this protocol at start (else the page asks for it).",
)
@click.option("--party", help="Your party id in the protocol (else the page asks).")
@click.option(
    "--secret-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Load this secret at start (else the page asks for it). Its content never reaches the page.",
)
@click.option("--workers", type=click.IntRange(min=1), help="Processes to use (default: every core).")
@click.option("--no-browser", is_flag=True, help="Print the link, do not open a browser.")
def encoder(
    out_dir: Path,
    protocol_path: Path | None,
    party: str | None,
    secret_file: Path | None,
    workers: int | None,
    no_browser: bool,
) -> None:
    """Open the encoder page: encode a client list from a browser, on this computer only.

    Serves a page on 127.0.0.1 (a random port; nothing else can reach it) with a one-time
    link, and opens it in your browser. The page asks for the protocol, the secret and the
    client list (a spreadsheet or CSV), shows which column is which and what the check
    found, encodes, and says what to send to whom. Stop it with Ctrl+C.

    Example: pprl encoder --out-dir ~/pprl-encoded
    """
    import uvicorn

    from linkage.agency.page.app import EncoderSettings, create_encoder_app

    protocol = None
    if protocol_path is not None:
        loaded = load_protocol(protocol_path)
        if party is not None:
            loaded.party(party)
        protocol = (loaded, protocol_path.name)
    secret = (read_secret(secret_file), secret_file.name) if secret_file is not None else None
    out_dir = out_dir.expanduser().resolve()
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()  # the browser may knock before the server runs: its connection waits in the backlog
    port = listener.getsockname()[1]
    token = secrets.token_urlsafe(32)
    work_dir = Path(tempfile.mkdtemp(prefix="pprl-encoder-"))  # mode 0700: mkdtemp's own
    try:
        settings = EncoderSettings(
            token=token,
            hosts=(f"127.0.0.1:{port}", f"localhost:{port}"),
            out_root=out_dir,
            work_dir=work_dir,
            workers=workers,
            protocol=protocol,
            party=party,
            secret=secret,
        )
        app = create_encoder_app(settings)
        url = f"http://127.0.0.1:{port}/?token={token}"
        click.echo(f"pprl encoder: open {url}", err=True)
        click.echo(f"encodings go into {out_dir}; stop with Ctrl+C", err=True)
        if not no_browser:
            webbrowser.open(url)
        # No access log: the first request's URL holds the token.
        config = uvicorn.Config(app, log_level="warning", access_log=False, server_header=False, lifespan="off")
        uvicorn.Server(config).run(sockets=[listener])
    finally:
        listener.close()
        shutil.rmtree(work_dir, ignore_errors=True)
