"""Identity commands: ``forget`` (GDPR erasure) and ``identity squash``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from pipeline.cli import Bootstrap, ClickHouseURL, Database, cli, flag, opt, settings_from
from pipeline.errors import TouchpointError

identity_cli = typer.Typer(
    name="identity",
    help="Identity maintenance: squash overrides into the stored rows.",
    no_args_is_help=True,
)
cli.add_typer(identity_cli, name="identity")


@cli.command()
def forget(
    identifier: Annotated[
        str,
        flag(
            "forget",
            "identifier",
            "type:value of one identifier of the person, e.g. email:someone@example.com "
            "(normalised and hashed as the pipeline does).",
            "--identifier",
        ),
    ],
    bootstrap: Bootstrap = None,
    clickhouse_url: ClickHouseURL = None,
    database: Database = None,
    topic_prefix: Annotated[str | None, opt("topic_prefix")] = None,
    pii_mode: Annotated[str | None, opt("pii_mode")] = None,
    phone_region: Annotated[str | None, opt("default_phone_region", "--phone-region")] = None,
    timeout: Annotated[
        float,
        flag("forget", "timeout", "Seconds to wait for the resolver's erasure.", "--timeout"),
    ] = 120.0,
) -> None:
    """GDPR erasure: forget the person holding an identifier, with all their identifiers.

    Asks the resolver to erase the person's whole identity cluster (workers then drop
    those identifiers on ingest, so replays do not bring the person back), deletes their
    rows from every table holding a customer id, waits for the resolver's erasure, deletes
    again what was in flight, and prints a summary. Exit code 0: done; 1: the resolver did
    not confirm within the timeout (rows were deleted; run it again); 2: bad input.
    """
    from pipeline.identity_ops import forget_identifier, identifier_node

    settings = settings_from(
        kafka_bootstrap=bootstrap, clickhouse_url=clickhouse_url, clickhouse_database=database,
        topic_prefix=topic_prefix, pii_mode=pii_mode, default_phone_region=phone_region,
    )  # fmt: skip
    console = Console(stderr=True)
    try:
        identifier_node(settings, identifier)
    except TouchpointError as exc:
        raise typer.BadParameter(str(exc), param_hint="--identifier") from None
    report = forget_identifier(
        settings, identifier, timeout=timeout, progress=lambda m: console.print(m, highlight=False)
    )
    for line in report.lines():
        typer.echo(line)
    raise typer.Exit(0 if report.ok else 1)


@identity_cli.command("squash")
def squash_cmd(
    clickhouse_url: ClickHouseURL = None,
    database: Database = None,
    grace: Annotated[
        float,
        flag(
            "squash",
            "grace",
            "Clear only overrides that landed at least this many seconds ago.",
            "--grace",
        ),
    ] = 300.0,
) -> None:
    """Rewrite rows stamped with an old customer id to their current customer, then clear
    the overrides no row needs any more. Idempotent; safe to run while workers write."""
    from pipeline.chclient import ClickHouseConfig, connect
    from pipeline.identity_ops import squash

    settings = settings_from(clickhouse_url=clickhouse_url, clickhouse_database=database)
    client = connect(ClickHouseConfig.from_settings(settings))
    report = squash(client, settings.clickhouse_database, grace_seconds=grace)
    for line in report.lines():
        typer.echo(line)
