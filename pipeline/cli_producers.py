"""Producer-side commands: ``produce``, ``collect`` and ``simulate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from pipeline.cli import Bootstrap, cli, opt, settings_from
from pipeline.errors import BrokerError
from pipeline.kafka_config import KafkaConfig

RawTopic = Annotated[str | None, opt("raw_topic", "--topic")]


@cli.command()
def produce(
    path: Annotated[Path, typer.Argument(help="JSONL file, one event per line ('-': stdin).")],
    bootstrap: Bootstrap = None,
    topic: RawTopic = None,
    send_invalid: Annotated[
        bool, typer.Option("--send-invalid", help="Send invalid lines too, to be dead-lettered.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate only; send nothing.")
    ] = False,
    max_errors: Annotated[int, typer.Option(help="Errors listed in the report.")] = 20,
) -> None:
    """Validate a JSONL file of events and produce the valid ones; print a report.

    Exit code 0: every line valid; 1: some lines invalid (listed with line, field and
    value); 2: Kafka unreachable or a delivery failed.
    """
    from pipeline.producers.client import validation_config_from_settings
    from pipeline.producers.kafka import make_producer
    from pipeline.producers.produce_file import produce_file

    settings = settings_from(kafka_bootstrap=bootstrap, raw_topic=topic)
    console = Console(stderr=True)
    try:
        producer = (
            None
            if dry_run
            else make_producer(KafkaConfig.from_settings(settings), client_id="touchpoint-produce")
        )
        try:
            report = produce_file(
                str(path), producer, settings.raw_topic, progress=True, send_invalid=send_invalid,
                dry_run=dry_run, validation=validation_config_from_settings(settings),
                max_errors=max_errors, console=console,
            )  # fmt: skip
        finally:
            if producer is not None:
                producer.close()
    except BrokerError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    report.render(console)
    raise typer.Exit(0 if report.ok else 1)


@cli.command()
def collect(
    bootstrap: Bootstrap = None,
    host: Annotated[str | None, opt("collector_host", "--host")] = None,
    port: Annotated[int | None, opt("collector_port", "--port")] = None,
    cors_origins: Annotated[str | None, opt("collector_cors_origins", "--cors-origins")] = None,
) -> None:
    """HTTP collector: ``POST /v1/touchpoints`` with one event or a JSON array.

    Answers 202 with per-event errors for rejected events (which also go to the
    dead-letter topic); 413 over the size limits; 400 for a body that is not JSON.
    """
    from pipeline.producers.collector import run_collector

    run_collector(
        settings_from(
            kafka_bootstrap=bootstrap,
            collector_host=host,
            collector_port=port,
            collector_cors_origins=cors_origins,
        )
    )
