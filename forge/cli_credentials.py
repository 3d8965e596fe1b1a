"""``forge credentials new-key|rotate``: the keyring that seals projects' own provider
keys. Rotation: put a new key first in FORGE_ENCRYPTION_KEYS (keep the old ones after
it), restart, run ``forge credentials rotate``, then drop the old keys."""

from __future__ import annotations

from typing import Annotated

import typer

from forge.cli_audit import record_cli_action
from forge.cli_db import on_database
from forge.credentials.sealing import Keyring, new_key_entry
from forge.credentials.store import CredentialStore
from forge.settings import Settings

credentials_app = typer.Typer(
    help="Sealed provider credentials (bring your own key): the keyring.", no_args_is_help=True
)


@credentials_app.command("new-key")
def credentials_new_key(
    key_id: Annotated[str | None, typer.Option(help="Its id (default: a random one).")] = None,
) -> None:
    """Print a new ``id:base64key`` entry to put first in FORGE_ENCRYPTION_KEYS."""
    typer.echo(new_key_entry(key_id))


@credentials_app.command("rotate")
def credentials_rotate() -> None:
    """Re-seal every stored credential under the keyring's current (first) key."""
    keyring = Keyring.of(Settings())
    moved = on_database(lambda s: CredentialStore(s, keyring), lambda store: store.reseal())
    record_cli_action("credentials.rotated", None, keyring.current, {"resealed": moved})
    typer.echo(f"{moved} credentials re-sealed under key {keyring.current!r}")
