"""Producer-side commands: ``produce``, ``collect`` and ``simulate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from pipeline.cli import Bootstrap, cli, flag, opt, settings_from
from pipeline.errors import BrokerError
from pipeline.kafka_config import KafkaConfig

RawTopic = Annotated[str | None, opt("raw_topic", "--topic")]


@cli.command()
def produce(
    path: Annotated[Path, typer.Argument(help="JSONL file, one event per line ('-': stdin).")],
    bootstrap: Bootstrap = None,
    topic: RawTopic = None,
    send_invalid: Annotated[
        bool,
        flag(
            "produce",
            "send_invalid",
            "Send invalid lines too, to be dead-lettered.",
            "--send-invalid",
        ),
    ] = False,
    dry_run: Annotated[
        bool, flag("produce", "dry_run", "Validate only; send nothing.", "--dry-run")
    ] = False,
    max_errors: Annotated[int, flag("produce", "max_errors", "Errors listed in the report.")] = 20,
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


def _incident(text: str) -> Any:
    """``stage:start-end[:multiplier]`` in minutes, e.g. ``purchase:30-45:2``."""
    from pipeline.producers.simulator import Incident

    try:
        stage, window, *mult = text.split(":")
        start, end = window.split("-")
        return Incident.model_validate(
            {"stage": stage, "start_minute": float(start), "end_minute": float(end),
             "dropoff_multiplier": float(mult[0]) if mult else 2.0}
        )  # fmt: skip
    except (ValueError, TypeError) as exc:
        raise typer.BadParameter(
            f"--incident {text!r}: expected stage:start-end[:multiplier] ({exc})"
        ) from None


@cli.command()
def simulate(
    bootstrap: Bootstrap = None,
    topic: RawTopic = None,
    seed: Annotated[
        int, flag("simulate", "seed", "Random seed: the same seed gives the same events.")
    ] = 0,
    customers: Annotated[
        int, flag("simulate", "customers", "Customers arriving during the run.")
    ] = 1000,
    events: Annotated[
        int | None, flag("simulate", "events", "Stop after this many events.", "--events")
    ] = None,
    duration: Annotated[float, flag("simulate", "duration", "Simulated minutes.")] = 120.0,
    rate: Annotated[
        float, flag("simulate", "rate", "Messages/s sent (0: as fast as possible).")
    ] = 0.0,
    live: Annotated[
        bool,
        flag("simulate", "live", "Event times start now; send in real time at --rate.", "--live"),
    ] = False,
    malformed: Annotated[
        float, flag("simulate", "malformed", "Fraction of malformed messages.")
    ] = 0.005,
    duplicates: Annotated[
        float, flag("simulate", "duplicates", "Fraction of events sent twice.")
    ] = 0.01,
    late: Annotated[float, flag("simulate", "late", "Fraction of events 2-30 min late.")] = 0.01,
    incident: Annotated[
        list[str] | None,
        flag("simulate", "incident", "stage:start-end[:x] in minutes, e.g. purchase:30-45:2."),
    ] = None,
    adversarial: Annotated[
        bool,
        flag(
            "simulate",
            "adversarial",
            "Shared phones, switchboards, shared devices...",
            "--adversarial",
        ),
    ] = False,
    truth: Annotated[
        Path | None, flag("simulate", "truth", "Write the ground truth (JSONL) here.")
    ] = None,
    quiet: Annotated[bool, flag("simulate", "quiet", "No progress bar.", "--quiet")] = False,
    warmup: Annotated[
        float,
        flag("simulate", "warmup", "Live: simulated minutes before now (generated, not sent)."),
    ] = 30.0,
) -> None:
    """Simulate realistic multi-channel customer journeys and produce them to Kafka.

    Deterministic for a seed. Personas with channel preferences, several identifiers per
    customer, stage progression with drop-off causes (long holds, unresolved chats, bounced
    emails), late, out-of-order, duplicate and malformed events, optional incidents and
    adversarial identity cases, and a ground-truth file for evaluation.
    """
    from datetime import UTC, datetime, timedelta

    from pipeline.producers.kafka import make_producer
    from pipeline.producers.run_simulation import run
    from pipeline.producers.simulator import SimulationConfig
    from pipeline.producers.simulator import simulate as generate

    settings = settings_from(kafka_bootstrap=bootstrap, raw_topic=topic)
    now = datetime.now(UTC)
    config = SimulationConfig(
        seed=seed, start=now - timedelta(minutes=warmup if live else duration),
        duration=timedelta(minutes=duration), customers=customers, max_events=events,
        events_per_second=rate if live and rate > 0 else None,
 malformed_fraction=malformed,
        duplicate_fraction=duplicates, late_fraction=late,
        incidents=tuple(_incident(i) for i in incident or ()), adversarial=adversarial,
    )  # fmt: skip
    console = Console(stderr=True)
    try:
        producer = make_producer(
            KafkaConfig.from_settings(settings), client_id="touchpoint-simulate"
        )
        try:
            result = run(
                generate(config, truth),
                producer,
                settings.raw_topic,
                rate=rate,
                live=live,
                total=events,
                quiet=quiet,
                console=console,
            )
        finally:
            producer.close()
    except BrokerError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    result.render(console)
    if truth:
        console.print(f"ground truth: {truth}")
