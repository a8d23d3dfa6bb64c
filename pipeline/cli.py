"""``touchpoint``: the command line. Each command reads the settings once (env vars, then
flags: every flag names its env var in ``--help``) and hands explicit values inward.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from pipeline.errors import TouchpointError
from pipeline.settings import ENV_PREFIX, Settings, load_settings

cli = typer.Typer(
    name="touchpoint",
    help="Event-streaming customer-journey analytics: Kafka -> faust -> ClickHouse.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
eval_app = typer.Typer(
    name="eval",
    help="Measure the pipeline against a simulation's ground truth.",
    no_args_is_help=True,
)
"""``touchpoint eval``: its commands live in :mod:`pipeline.cli_eval` and
:mod:`pipeline.cli_metrics` (defined here so that neither imports the other)."""
cli.add_typer(eval_app, name="eval")


def opt(field: str, *flags: str) -> Any:
    """A CLI option bound to a settings field: same env var, same help text."""
    info = Settings.model_fields[field]
    return typer.Option(
        *(flags or (f"--{field.replace('_', '-')}",)),
        envvar=ENV_PREFIX + field.upper(),
        show_envvar=True,
        help=info.description,
    )


def flag(command: str, name: str, help: str, *decls: str) -> Any:
    """A command-specific option, with its env var ``TOUCHPOINT_<COMMAND>_<NAME>`` shown."""
    envvar = f"TOUCHPOINT_{command}_{name}".upper().replace("-", "_")
    return typer.Option(*decls, envvar=envvar, show_envvar=True, help=help)


def describe_settings_error(exc: ValidationError) -> str:
    """One line per bad setting: its env var, the value given, and what is wrong."""
    lines = []
    for err in exc.errors(include_url=False):
        field = str(err["loc"][0]) if err["loc"] else "?"
        lines.append(f"{ENV_PREFIX}{field.upper()}={err.get('input')!r}: {err['msg']}")
    return "invalid settings:\n  " + "\n  ".join(lines)


def settings_from(**flags: Any) -> Settings:
    try:
        return load_settings(**flags)
    except ValidationError as exc:
        typer.echo(f"touchpoint: {describe_settings_error(exc)}", err=True)
        raise typer.Exit(2) from exc
    except OSError as exc:  # a *_FILE variable naming a file that cannot be read
        typer.echo(f"touchpoint: invalid settings: {exc}", err=True)
        raise typer.Exit(2) from exc


DataDir = Annotated[Path | None, opt("data_dir")]
Bootstrap = Annotated[str | None, opt("kafka_bootstrap", "--bootstrap")]
ClickHouseURL = Annotated[str | None, opt("clickhouse_url")]
Database = Annotated[str | None, opt("clickhouse_database", "--database")]
Partitions = Annotated[int | None, opt("partitions")]


@cli.command()
def up(
    data_dir: DataDir = None,
    bootstrap: Bootstrap = None,
    clickhouse_url: ClickHouseURL = None,
    partitions: Partitions = None,
    workers: Annotated[int | None, opt("workers")] = None,
    demo_rate: Annotated[float | None, opt("demo_rate")] = None,
    dashboard_port: Annotated[int | None, opt("dashboard_port")] = None,
) -> None:
    """Run everything on this machine: broker, ClickHouse, workers, simulator, dashboard.

    Starts the embedded Kafka-compatible broker (Tansu) and ClickHouse (chDB behind the
    ClickHouse HTTP interface) unless something already answers at the configured
    addresses, creates topics, migrates, starts the faust workers, the simulator at a
    demo rate and the dashboard, and shows live progress. Ctrl-C stops all of it.
    """
    from pipeline.stack import run_stack

    settings = settings_from(
        data_dir=data_dir, kafka_bootstrap=bootstrap, clickhouse_url=clickhouse_url,
        partitions=partitions, workers=workers, demo_rate=demo_rate, dashboard_port=dashboard_port,
    )  # fmt: skip
    run_stack(settings)


@cli.command()
def worker(
    bootstrap: Bootstrap = None,
    clickhouse_url: ClickHouseURL = None,
    web_port: Annotated[int | None, opt("worker_web_port", "--web-port")] = None,
    loglevel: Annotated[
        str,
        typer.Option(
            "--loglevel",
            "-l",
            envvar="TOUCHPOINT_WORKER_LOGLEVEL",
            show_envvar=True,
            help="faust log level.",
        ),
    ] = "info",
) -> None:
    """Run one faust worker (the same as ``faust -A pipeline.app worker``)."""
    env = {
        ENV_PREFIX + "KAFKA_BOOTSTRAP": bootstrap,
        ENV_PREFIX + "CLICKHOUSE_URL": clickhouse_url,
        ENV_PREFIX + "WORKER_WEB_PORT": str(web_port) if web_port else None,
    }
    os.environ.update({k: v for k, v in env.items() if v})
    settings_from()  # fail early with a clear message on bad settings
    sys.argv = ["faust", "-A", "pipeline.app", "worker", "-l", loglevel]
    from faust.cli.faust import cli as faust_cli

    faust_cli()


@cli.command()
def migrate(clickhouse_url: ClickHouseURL = None, database: Database = None) -> None:
    """Create the database and apply pending ClickHouse migrations (idempotent)."""
    from pipeline.chclient import ClickHouseConfig, connect
    from pipeline.migrate import migrate as apply
    from pipeline.stage_model import load_stage_model

    settings = settings_from(clickhouse_url=clickhouse_url, clickhouse_database=database)
    client = connect(ClickHouseConfig.from_settings(settings), database="")
    model = load_stage_model(settings.stage_model_path)
    applied = apply(client, settings.clickhouse_database, progress=typer.echo, model=model)
    typer.echo(f"{len(applied)} migration(s) applied to {settings.clickhouse_database}")


@cli.command("create-topics")
def create_topics_cmd(bootstrap: Bootstrap = None, partitions: Partitions = None) -> None:
    """Create the pipeline's Kafka topics if they are missing."""
    from pipeline.broker import create_topics, topic_specs
    from pipeline.kafka_config import KafkaConfig

    settings = settings_from(kafka_bootstrap=bootstrap, partitions=partitions)
    created = create_topics(KafkaConfig.from_settings(settings), topic_specs(settings))
    typer.echo(f"created: {', '.join(created) or 'nothing (all exist)'}")


def main() -> None:
    try:
        cli()
    except TouchpointError as exc:
        typer.echo(f"touchpoint: {exc}", err=True)
        sys.exit(1)


# Commands defined in other modules register themselves on ``cli`` when imported.
from pipeline import (  # noqa: E402, F401  # imported for their side effect
    cli_eval,  # eval stitching
    cli_identity,  # forget, identity squash
    cli_metrics,  # verify metrics, eval alerts
    cli_painpoints,  # painpoints
    cli_producers,  # produce, collect, simulate
    cli_sql,  # sql
)

if __name__ == "__main__":  # python -m pipeline.cli: use the module the commands registered on
    from pipeline.cli import main as registered_main

    registered_main()
