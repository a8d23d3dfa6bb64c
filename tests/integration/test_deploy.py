"""The deployment files, checked statically with the real tools and against the code.

* ``docker-compose.yml`` (and every ``deploy/compose/*.yml`` override) is accepted by
  Compose (``docker compose config`` or ``docker-compose config``); every touchpoint
  service runs a real ``touchpoint`` command or project module, with options that command
  accepts, and only env vars the settings model knows, whose values it accepts.
* Prometheus config, rules and rule unit tests pass ``promtool``; the rules use metric names
  the workers really export; Alertmanager's config is consistent (and passes ``amtool``
  when installed).
* Kubernetes manifests parse; images, env vars, ConfigMap/Secret references and Service
  ports are consistent.
* Grafana provisioning, ClickHouse users, the Kafka topic list, the Dockerfile.

Tools: ``promtool`` (Debian ``prometheus``) and ``docker-compose`` (Debian
``docker-compose``) are installed by ``scripts/setup --system-packages``. A missing tool
fails the test when apt could install it, and skips it only where it cannot be installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from pydantic import AliasChoices

from pipeline.broker import topic_specs
from pipeline.cli import cli
from pipeline.metrics import PipelineMetrics
from pipeline.settings import ENV_PREFIX, Settings, load_settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = ROOT / "docker-compose.yml"
OVERRIDES = sorted((DEPLOY / "compose").glob("*.yml"))
K8S = DEPLOY / "k8s"
PROMETHEUS = DEPLOY / "prometheus"
PROJECT_IMAGE_REPO = "touchpoint"
PROJECT_PACKAGES = ("pipeline", "schemas")
ANNOUNCED_COMMANDS = {"simulate", "produce", "collect"}
"""Commands the CLI will have (README) but may not register yet: their absence is an xfail."""

TOOL_PACKAGES = {
    "promtool": "prometheus",
    "docker-compose": "docker-compose",
    "amtool": "prometheus-alertmanager",
}


# --- helpers ---------------------------------------------------------------------------------


def require_tool(name: str) -> str:
    """Path of ``name``; fails when apt could install it, skips only where it cannot."""
    path = shutil.which(name)
    if path:
        return path
    package = TOOL_PACKAGES[name]
    if shutil.which("apt-get") is None:
        pytest.skip(
            f"{name} is not installed and not installable here (no apt-get; Debian package {package})"
        )
    pytest.fail(
        f"{name} is not installed: run scripts/setup --system-packages (apt-get install {package})"
    )


def compose_command() -> list[str]:
    """``docker compose`` (v2) when present, else ``docker-compose`` (v1)."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return [require_tool("docker-compose")]


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SECRETS_DIR"}
    return subprocess.run(
        argv, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120, **kwargs
    )


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, (
        f"{shlex.join(result.args)} failed:\n{result.stdout}\n{result.stderr}"
    )


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@cache
def compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE_FILE)
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), "no services"
    return data


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def merged_services(*overrides: Path) -> dict[str, dict[str, Any]]:
    """Services of the base file with overrides applied the way Compose merges maps."""
    result = {name: dict(svc) for name, svc in services().items()}
    for path in overrides:
        for name, svc in (load_yaml(path).get("services") or {}).items():
            base = result.setdefault(name, {})
            for key, value in svc.items():
                if key == "environment":
                    base[key] = {**environment(base), **environment({key: value})}
                else:
                    base[key] = value
    return result


def image_repo_tag(image: str) -> tuple[str, str]:
    name = image.partition("@")[0]
    repo, sep, tag = name.rpartition(":")
    if not sep or "/" in tag:
        return name, ""
    return repo, tag


def is_project_image(image: str) -> bool:
    return image_repo_tag(image)[0].rsplit("/", 1)[-1] == PROJECT_IMAGE_REPO


def touchpoint_services(svcs: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    svcs = services() if svcs is None else svcs
    return {
        n: s for n, s in svcs.items() if "build" in s or is_project_image(str(s.get("image", "")))
    }


def environment(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def secret_targets(svc: dict[str, Any]) -> set[str]:
    """Paths at which the service's Compose secrets appear in the container."""
    paths = set()
    for item in svc.get("secrets") or []:
        if isinstance(item, str):
            paths.add(f"/run/secrets/{item}")
        else:
            target = item.get("target") or item["source"]
            paths.add(target if target.startswith("/") else f"/run/secrets/{target}")
    return paths


def as_argv(value: Any) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def command_lines(entrypoint: Any, command: Any) -> list[list[str]]:
    """The command lines a container runs: ``sh -c "a && b"`` gives two."""
    argv = as_argv(entrypoint) + as_argv(command)
    if len(argv) >= 3 and Path(argv[0]).name in ("sh", "bash") and argv[1] == "-c":
        parts = re.split(r"&&|\|\||;|\n", argv[2])
        return [shlex.split(p) for p in parts if p.strip()]
    return [argv]


# --- settings model: known env vars -------------------------------------------------------------


def settings_env_names() -> tuple[set[str], set[str]]:
    """(plain names, ``*_FILE`` names) the settings model reads."""
    plain: set[str] = set()
    files: set[str] = set()
    for name, field in Settings.model_fields.items():
        plain.add(ENV_PREFIX + name.upper())
        files.add(ENV_PREFIX + name.upper() + "_FILE")
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            plain |= {c for c in alias.choices if isinstance(c, str) and c.isupper()}
        elif isinstance(alias, str) and alias.isupper():
            plain.add(alias)
    return plain, files


def check_settings_env(
    env: dict[str, str],
    where: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mounted: set[str] | None = None,
) -> None:
    """Every name is known; values load through the real settings loader."""
    plain, files = settings_env_names()
    unknown = sorted(k for k in env if k not in plain and k not in files)
    assert not unknown, f"{where}: env vars the settings model does not know: {unknown}"
    for key in env:
        if key in files:
            base = key[: -len("_FILE")]
            assert base not in env, f"{where}: both {base} and {key} are set"
            if mounted is not None:
                assert env[key] in mounted, (
                    f"{where}: {key}={env[key]} is not a mounted secret ({sorted(mounted)})"
                )
    for key in list(os.environ):
        if key.startswith(ENV_PREFIX) or key == "CLICKHOUSE_URL":
            monkeypatch.delenv(key)
    for key, value in env.items():
        if key in files:
            secret = tmp_path / key
            secret.write_text("s3cret-value\n", encoding="utf-8")
            value = str(secret)
        monkeypatch.setenv(key, value)
    try:
        load_settings()
    except Exception as exc:
        pytest.fail(f"{where}: the settings model refuses these values: {exc}")


# --- commands: real touchpoint subcommands or project modules -------------------------------------


@cache
def cli_commands() -> dict[str, Any]:
    """The registered commands (typer builds a click group; recent typer vendors click)."""
    group = typer.main.get_command(cli)
    commands = getattr(group, "commands", None)
    assert isinstance(commands, dict), "pipeline.cli.cli is not a command group"
    return commands


def check_command_line(argv: list[str], where: str) -> None:
    assert argv, f"{where}: no command (the image's default only prints help)"
    program = Path(argv[0]).name
    if program == "touchpoint":
        assert len(argv) >= 2, f"{where}: `touchpoint` without a subcommand"
        name, args = argv[1], argv[2:]
        command = cli_commands().get(name)
        if command is None:
            known = sorted(cli_commands())
            if name in ANNOUNCED_COMMANDS:
                pytest.xfail(
                    f"{where}: `touchpoint {name}` is announced but not registered in pipeline.cli yet (has {known})"
                )
            pytest.fail(
                f"{where}: `touchpoint {name}` is not a command of pipeline.cli (has {known})"
            )
        try:
            command.make_context(f"touchpoint {name}", list(args), resilient_parsing=False)
        except Exception as exc:  # click's UsageError and friends (vendored by typer)
            message = exc.format_message() if hasattr(exc, "format_message") else repr(exc)
            pytest.fail(f"{where}: `{shlex.join(argv)}` is refused by the CLI: {message}")
        return
    if program.startswith("python") and len(argv) >= 3 and argv[1] == "-m":
        module = argv[2]
        assert module.split(".")[0] in PROJECT_PACKAGES, (
            f"{where}: {module} is not a project module"
        )
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin, f"{where}: module {module} does not exist"
        source = Path(spec.origin).read_text(encoding="utf-8")
        runnable = spec.submodule_search_locations is not None or '__name__ == "__main__"' in source
        assert runnable, f'{where}: {module} has no `if __name__ == "__main__"` entry'
        return
    pytest.fail(
        f"{where}: `{shlex.join(argv)}` is neither a touchpoint command nor `python -m` a project module"
    )


# === Compose ===================================================================================


def test_compose_config_is_valid() -> None:
    assert_ok(run([*compose_command(), "-f", str(COMPOSE_FILE), "config", "-q"]))
    assert_ok(
        run([*compose_command(), "-f", str(COMPOSE_FILE), "--profile", "demo", "config", "-q"])
    )


@pytest.mark.parametrize("override", OVERRIDES, ids=lambda p: p.name)
def test_compose_overrides_are_valid(override: Path) -> None:
    assert_ok(
        run([*compose_command(), "-f", str(COMPOSE_FILE), "-f", str(override), "config", "-q"])
    )


def test_compose_has_the_stack() -> None:
    svcs = services()
    wanted = {
        "kafka",
        "clickhouse",
        "init",
        "worker",
        "simulator",
        "dashboard",
        "prometheus",
        "alertmanager",
        "grafana",
    }
    assert wanted <= set(svcs), f"missing services: {sorted(wanted - set(svcs))}"
    assert set(touchpoint_services()) >= {"init", "worker", "simulator", "dashboard"}
    assert svcs["simulator"].get("profiles") == ["demo"], (
        "the simulator must be off by default (profile demo)"
    )
    assert "profiles" not in svcs["worker"] and "profiles" not in svcs["dashboard"]


def test_compose_images_are_pinned() -> None:
    for name, svc in services().items():
        image = svc.get("image")
        assert image, f"{name}: no image"
        tag = image_repo_tag(image)[1]
        assert tag and tag != "latest" and re.search(r"\d", tag), (
            f"{name}: image {image} is not pinned"
        )
    images = {n: image_repo_tag(s["image"]) for n, s in services().items()}
    assert images["kafka"][0] == "apache/kafka" and images["kafka"][1].startswith("3.9."), images[
        "kafka"
    ]
    assert images["clickhouse"][0] == "clickhouse/clickhouse-server" and images["clickhouse"][
        1
    ].startswith("24."), images["clickhouse"]
    project = {s["image"] for s in touchpoint_services().values()}
    assert len(project) == 1, f"touchpoint services use different images: {project}"


def test_worker_is_scalable() -> None:
    worker = services()["worker"]
    assert "container_name" not in worker, "a fixed container_name prevents --scale"
    assert not worker.get("ports"), (
        "a host port prevents --scale (use expose; Prometheus scrapes in-network)"
    )
    assert as_argv(worker.get("command")) == ["touchpoint", "worker"]


@pytest.mark.parametrize("name", sorted(touchpoint_services()))
def test_compose_commands_are_real(name: str) -> None:
    svc = services()[name]
    for argv in command_lines(svc.get("entrypoint"), svc.get("command")):
        check_command_line(argv, f"compose service {name}")


def test_compose_init_creates_topics_then_migrates() -> None:
    init = services()["init"]
    lines = command_lines(init.get("entrypoint"), init.get("command"))
    assert [line[:2] for line in lines] == [
        ["touchpoint", "create-topics"],
        ["touchpoint", "migrate"],
    ]
    assert init.get("restart") in ("no", None)
    for dependent in ("worker", "simulator", "dashboard"):
        condition = services()[dependent]["depends_on"]["init"]["condition"]
        assert condition == "service_completed_successfully", dependent


@pytest.mark.parametrize("override", [None, *OVERRIDES], ids=lambda p: p.name if p else "base")
def test_compose_env_is_known_to_settings(
    override: Path | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    svcs = merged_services(*([override] if override else []))
    for name, svc in touchpoint_services(svcs).items():
        env = environment(svc)
        check_settings_env(
            env, f"compose service {name}", tmp_path, monkeypatch, secret_targets(svc)
        )
        assert env.get("TOUCHPOINT_EMBEDDED_BROKER") == "false", (
            f"{name}: set TOUCHPOINT_EMBEDDED_BROKER=false"
        )
        assert env.get("TOUCHPOINT_EMBEDDED_CLICKHOUSE") == "false", (
            f"{name}: set TOUCHPOINT_EMBEDDED_CLICKHOUSE=false"
        )


def test_compose_service_settings() -> None:
    svcs = services()
    worker, dashboard = environment(svcs["worker"]), environment(svcs["dashboard"])
    assert worker["TOUCHPOINT_WORKER_WEB_HOST"] == "0.0.0.0", (
        "Prometheus must reach the worker's /metrics"
    )
    assert dashboard["TOUCHPOINT_DASHBOARD_HOST"] == "0.0.0.0"
    port = dashboard.get(
        "TOUCHPOINT_DASHBOARD_PORT", str(Settings.model_fields["dashboard_port"].default)
    )
    assert any(str(p).endswith(f":{port}") for p in svcs["dashboard"].get("ports", [])), (
        "dashboard port not published"
    )
    for name, svc in touchpoint_services().items():
        env = environment(svc)
        assert env.get("TOUCHPOINT_KAFKA_BOOTSTRAP", "").split(":")[0] in svcs, (
            f"{name}: bootstrap is not a service"
        )
        host = re.sub(r"^https?://", "", env.get("TOUCHPOINT_CLICKHOUSE_URL", "")).split(":")[0]
        assert host in svcs, f"{name}: ClickHouse URL host is not a service"


def test_compose_secrets_and_mounts_exist() -> None:
    declared = set(compose().get("secrets") or {})
    for name, svc in services().items():
        for item in svc.get("secrets") or []:
            source = item if isinstance(item, str) else item["source"]
            assert source in declared, f"{name}: secret {source} is not declared"
        for volume in svc.get("volumes") or []:
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith("./deploy/"):
                assert (ROOT / source).exists(), f"{name}: mounts missing {source}"
    generator = (DEPLOY / "secrets" / "generate").read_text(encoding="utf-8")
    for secret in declared:
        assert secret in generator, f"deploy/secrets/generate does not create {secret}"


# === Dockerfile ================================================================================


def test_dockerfile_is_multistage_slim_and_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, flags=re.M))
    froms = [args.get(f.strip("${}"), f) for f in re.findall(r"^FROM\s+(\S+)", text, flags=re.M)]
    assert len(froms) >= 2 and re.search(r"^FROM\s+\S+\s+AS\s+builder", text, flags=re.M | re.I), (
        "needs a builder stage"
    )
    for base in froms:
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", base), (
            f"base image {base} is not a pinned python:3.11.x-slim-bookworm"
        )
    assert "pip wheel" in text, "the builder should build wheels"
    final = text[text.rindex("\nFROM ") :]
    users = re.findall(r"^USER\s+(\S+)", final, flags=re.M)
    assert users and users[-1].split(":")[0] not in ("0", "root"), (
        "the runtime must not run as root"
    )
    for env in re.findall(r"\b(TOUCHPOINT_\w+)=", text):
        assert env in settings_env_names()[0], f"Dockerfile sets unknown {env}"


def test_dockerignore_keeps_what_the_build_copies() -> None:
    ignore = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    sources = [
        s
        for line in re.findall(r"^COPY\s+(?!--from)(.+)$", text, flags=re.M)
        for s in line.split()[:-1]
    ]
    assert sources
    if ignore and ignore[0] == "*":
        for source in sources:
            assert f"!{source.rstrip('/')}" in ignore or f"!{source.rstrip('/')}/" in ignore, (
                f".dockerignore drops {source}"
            )
    for needed in (".venv", ".git"):
        assert ignore[0] == "*" or needed in ignore, f".dockerignore should exclude {needed}"


# === Prometheus and Alertmanager ===================================================================


def test_promtool_check_config() -> None:
    assert_ok(
        run([require_tool("promtool"), "check", "config", str(PROMETHEUS / "prometheus.yml")])
    )


def test_promtool_check_rules() -> None:
    rules = sorted((PROMETHEUS / "rules").glob("*.yml"))
    assert rules
    assert_ok(run([require_tool("promtool"), "check", "rules", *map(str, rules)]))


def test_promtool_test_rules() -> None:
    tests = sorted((PROMETHEUS / "tests").glob("*.yml"))
    assert tests
    assert_ok(run([require_tool("promtool"), "test", "rules", *map(str, tests)]))


def alerting_rules() -> Iterator[dict[str, Any]]:
    for path in sorted((PROMETHEUS / "rules").glob("*.yml")):
        for group in load_yaml(path)["groups"]:
            yield from (r for r in group["rules"] if "alert" in r)


def exported_sample_names() -> set[str]:
    names = set()
    for family in PipelineMetrics.create().registry.collect():
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_sum", "_count", "_created"),
        }
        names |= {family.name + s for s in suffixes.get(family.type, ("",))}
    return names


def test_rules_cover_the_worker_and_use_real_metrics() -> None:
    rules = list(alerting_rules())
    exported = exported_sample_names()
    for rule in rules:
        for metric in re.findall(r"\btouchpoint_[a-z0-9_]+", rule["expr"]):
            assert metric in exported, (
                f"{rule['alert']}: {metric} is not exported by pipeline.metrics ({sorted(exported)})"
            )
        assert rule.get("labels", {}).get("severity") in ("critical", "warning"), rule["alert"]
        assert rule.get("annotations", {}).get("summary"), rule["alert"]
    exprs = {r["alert"]: r for r in rules}
    joined = " ".join(r["expr"] for r in rules)
    assert "touchpoint_worker_healthy == 0" in joined
    retry = [r for r in rules if "touchpoint_sink_retrying == 1" in r["expr"]]
    assert retry and retry[0].get("for") == "1m", "sink retrying must alert after 1m"
    assert "touchpoint_consumer_lag" in joined and "touchpoint_dead_lettered_total" in joined
    assert any('up{job="touchpoint-worker"}' in r["expr"] for r in exprs.values()), (
        "no worker-down alert"
    )


def test_every_alert_has_a_firing_unit_test() -> None:
    tested = set()
    for path in sorted((PROMETHEUS / "tests").glob("*.yml")):
        for case in load_yaml(path)["tests"]:
            tested |= {
                t["alertname"] for t in case.get("alert_rule_test", []) if t.get("exp_alerts")
            }
    untested = {r["alert"] for r in alerting_rules()} - tested
    assert not untested, f"alerts without a promtool test that fires them: {sorted(untested)}"


def test_prometheus_scrapes_every_component() -> None:
    config = load_yaml(PROMETHEUS / "prometheus.yml")
    svcs = services()
    assert config["rule_files"] and all(not Path(p).is_absolute() for p in config["rule_files"])
    targets: dict[str, set[str]] = {}
    for job in config["scrape_configs"]:
        hosts = {t for sc in job.get("static_configs", []) for t in sc["targets"]}
        hosts |= {f"{n}:{sd['port']}" for sd in job.get("dns_sd_configs", []) for n in sd["names"]}
        targets[job["job_name"]] = hosts
    for job, hosts in targets.items():
        for host in hosts:
            assert host.split(":")[0] in {*svcs, "localhost"}, (
                f"job {job}: {host} is not a compose service"
            )
    scraped = {h.split(":")[0] for hs in targets.values() for h in hs}
    for component in ("worker", "clickhouse", "kafka-exporter", "alertmanager", "grafana"):
        assert component in scraped, f"{component} is not scraped"
    worker_port = environment(svcs["worker"]).get("TOUCHPOINT_WORKER_WEB_PORT", "6066")
    assert targets["touchpoint-worker"] == {f"worker:{worker_port}"}
    managers = {
        t
        for am in config["alerting"]["alertmanagers"]
        for sc in am["static_configs"]
        for t in sc["targets"]
    }
    assert {m.split(":")[0] for m in managers} <= set(svcs)
    mounts = [v for v in svcs["prometheus"]["volumes"] if isinstance(v, str)]
    assert any(v.startswith("./deploy/prometheus:") for v in mounts), (
        "rules must be mounted next to the config"
    )


def test_alertmanager_config() -> None:
    path = DEPLOY / "alertmanager" / "alertmanager.yml"
    config = load_yaml(path)
    receivers = {r["name"]: r for r in config["receivers"]}

    def routes(route: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield route
        for child in route.get("routes", []):
            yield from routes(child)

    for route in routes(config["route"]):
        if "receiver" in route:
            assert route["receiver"] in receivers, f"route to unknown receiver {route['receiver']}"
    assert any(r.get("webhook_configs") for r in receivers.values()), "no webhook receiver"
    alerts = {r["alert"] for r in alerting_rules()}
    for rule in config.get("inhibit_rules", []):
        for matcher in rule.get("source_matchers", []) + rule.get("target_matchers", []):
            m = re.fullmatch(r'alertname(=~?)"(.+)"', matcher)
            if m:
                for name in m.group(2).split("|"):
                    assert name in alerts, f"inhibit rule names unknown alert {name}"
    if shutil.which("amtool") is None:
        pytest.skip(
            "amtool not installed (Debian package prometheus-alertmanager, not in scripts/setup's list); structure checked"
        )
    assert_ok(run(["amtool", "check-config", str(path)]))


# === Grafana ===================================================================================


def test_grafana_clickhouse_datasource() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    data = load_yaml(provisioning / "datasources" / "clickhouse.yml")
    assert data["apiVersion"] == 1
    (source,) = [d for d in data["datasources"] if d["type"] == "grafana-clickhouse-datasource"]
    json_data = source["jsonData"]
    assert json_data["host"] in services(), "the datasource host is not a compose service"
    assert (
        json_data["username"]
        == Settings.model_fields["clickhouse_readonly_user"].default
        == "reader"
    )
    assert json_data["defaultDatabase"] == Settings.model_fields["clickhouse_database"].default
    password = source["secureJsonData"]["password"]
    grafana = services()["grafana"]
    match = re.fullmatch(r"\$__file\{(.+)\}", password)
    assert match and match.group(1) in secret_targets(grafana), (
        "password must come from a mounted secret file"
    )
    plugins = environment(grafana)["GF_INSTALL_PLUGINS"]
    assert re.search(r"grafana-clickhouse-datasource \d+\.\d+\.\d+", plugins), (
        "pin the plugin version"
    )

    dashboards = load_yaml(provisioning / "dashboards" / "dashboards.yml")
    paths = {p["options"]["path"] for p in dashboards["providers"]}
    assert paths == {"/var/lib/grafana/dashboards"}
    assert "./dashboards:/var/lib/grafana/dashboards:ro" in grafana["volumes"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]


# === ClickHouse ================================================================================


def test_clickhouse_users() -> None:
    root = ET.parse(DEPLOY / "clickhouse" / "users.d" / "touchpoint.xml").getroot()
    users = root.find("users")
    profiles = root.find("profiles")
    quotas = root.find("quotas")
    assert users is not None and profiles is not None and quotas is not None
    reader = users.find(Settings.model_fields["clickhouse_readonly_user"].default)
    assert reader is not None, "no reader user"
    profile = profiles.find(reader.findtext("profile", ""))
    assert profile is not None and profile.findtext("readonly") == "1", (
        "reader's profile must set readonly=1"
    )
    assert quotas.find(reader.findtext("quota", "")) is not None, "reader's quota is not defined"
    grants = " ".join(q.text or "" for q in reader.iter("query"))
    assert "SELECT" in grants and "INSERT" not in grants

    writer_name = environment(services()["worker"])["TOUCHPOINT_CLICKHOUSE_USER"]
    writer = users.find(writer_name)
    assert writer is not None, f"compose's writer user {writer_name} is not defined"
    clickhouse = services()["clickhouse"]
    entry = " ".join(as_argv(clickhouse.get("entrypoint")))
    for user in (reader, writer):
        password = user.find("password")
        assert password is not None and password.get("from_env"), (
            "passwords come from the environment"
        )
        assert password.get("from_env") in entry, (
            f"{password.get('from_env')} is not exported by the clickhouse service"
        )
    mounts = " ".join(clickhouse["volumes"])
    assert "users.d/touchpoint.xml" in mounts and "config.d/touchpoint.xml" in mounts
    ET.parse(DEPLOY / "clickhouse" / "config.d" / "touchpoint.xml")


def test_clickhouse_users_file_speaks_clickhouse() -> None:
    """Profile settings exist and grants parse, asked of the real ClickHouse engine (chDB,
    in a subprocess so this test process never opens a chDB session of its own)."""
    if importlib.util.find_spec("chdb") is None:
        pytest.skip("chdb is not installed (pip install -e '.[embedded]')")
    root = ET.parse(DEPLOY / "clickhouse" / "users.d" / "touchpoint.xml").getroot()
    settings = sorted(
        {
            setting.tag
            for profile in root.iterfind("profiles/*")
            for setting in profile
            if setting.tag != "constraints"
        }
        | {c.tag for c in root.iterfind("profiles/*/constraints/*")}
    )
    grants = [
        f"{q.text} TO {user.tag}"
        for user in root.iterfind("users/*")
        for q in user.iterfind("grants/query")
    ]
    script = (
        "import json, sys, chdb\n"
        "names, grants = json.loads(sys.argv[1]), json.loads(sys.argv[2])\n"
        "listed = ','.join(\"'\" + n + \"'\" for n in names)\n"
        "found = str(chdb.query(f'SELECT name FROM system.settings WHERE name IN ({listed})', 'CSV'))\n"
        "print(json.dumps(sorted(set(names) - {l.strip('\"') for l in found.split()})))\n"
        "for g in grants: chdb.query('EXPLAIN AST ' + g, 'CSV')\n"
    )
    result = run([sys.executable, "-c", script, json.dumps(settings), json.dumps(grants)])
    assert_ok(result)
    unknown = json.loads(result.stdout.strip().splitlines()[-1])
    assert not unknown, f"users.d/touchpoint.xml: settings ClickHouse does not know: {unknown}"


# === Kafka =====================================================================================


def test_kafka_topic_list_matches_topic_specs() -> None:
    listed = {t["name"]: t for t in load_yaml(DEPLOY / "kafka" / "topics.yaml")["topics"]}
    specs = {s.name: s for s in topic_specs(Settings())}
    assert set(listed) == set(specs)
    for name, spec in specs.items():
        assert listed[name]["partitions"] == spec.partitions, name
        assert {k: str(v) for k, v in listed[name]["config"].items()} == dict(spec.config), name


# === Kubernetes ================================================================================


@cache
def manifests() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                docs.append((path.name, doc))
    return docs


WORKLOADS = {"Deployment", "StatefulSet", "Job", "DaemonSet"}


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"]


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(doc)
    return [*spec.get("initContainers", []), *spec["containers"]]


def test_k8s_manifests_parse() -> None:
    docs = manifests()
    kinds = {d["kind"] for _, d in docs}
    assert {
        "Namespace",
        "ConfigMap",
        "Secret",
        "StatefulSet",
        "Deployment",
        "Service",
        "Job",
    } <= kinds
    namespaces = {d["metadata"]["name"] for _, d in docs if d["kind"] == "Namespace"}
    for file, doc in docs:
        assert doc.get("apiVersion") and doc.get("kind"), file
        if doc["kind"] == "Kustomization":
            listed = set(doc["resources"])
            others = {p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"}
            assert listed == others, (
                f"kustomization resources {sorted(listed)} != files {sorted(others)}"
            )
            continue
        assert doc["metadata"].get("name"), file
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") in namespaces, (
                f"{file}: {doc['kind']} outside the namespace"
            )


def test_k8s_images_and_commands() -> None:
    compose_images = {s["image"] for s in services().values()}
    project_tags = {image_repo_tag(s["image"])[1] for s in touchpoint_services().values()}
    for file, doc in manifests():
        if doc["kind"] not in WORKLOADS:
            continue
        for container in containers(doc):
            where = f"{file} {doc['kind']}/{doc['metadata']['name']} container {container['name']}"
            image = container["image"]
            if is_project_image(image):
                assert image_repo_tag(image)[1] in project_tags, (
                    f"{where}: {image} is not the compose project image tag"
                )
                check_command_line(
                    as_argv(container.get("command")) + as_argv(container.get("args")), where
                )
            else:
                assert image in compose_images, (
                    f"{where}: {image} is neither the project image nor pinned in compose"
                )


def test_k8s_env_and_references(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = manifests()
    config_maps = {
        d["metadata"]["name"]: d.get("data", {}) for _, d in docs if d["kind"] == "ConfigMap"
    }
    secrets = {
        d["metadata"]["name"]: {**d.get("data", {}), **d.get("stringData", {})}
        for _, d in docs
        if d["kind"] == "Secret"
    }
    plain, files = settings_env_names()
    for name, data in config_maps.items():
        unknown = sorted(set(data) - plain - files)
        assert not unknown, f"ConfigMap {name}: keys the settings model does not know: {unknown}"
    for file, doc in docs:
        if doc["kind"] not in WORKLOADS:
            continue
        for container in containers(doc):
            where = f"{file} {doc['kind']}/{doc['metadata']['name']} container {container['name']}"
            env: dict[str, str] = {}
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    ref = source["configMapRef"]["name"]
                    assert ref in config_maps, f"{where}: ConfigMap {ref} does not exist"
                    env |= config_maps[ref]
                if "secretRef" in source:
                    ref = source["secretRef"]["name"]
                    assert ref in secrets, f"{where}: Secret {ref} does not exist"
                    env |= {k: "x" for k in secrets[ref]}
            for var in container.get("env", []):
                value_from = var.get("valueFrom", {})
                if "secretKeyRef" in value_from:
                    ref = value_from["secretKeyRef"]
                    assert ref["name"] in secrets and ref["key"] in secrets[ref["name"]], (
                        f"{where}: {var['name']} -> missing {ref}"
                    )
                    env[var["name"]] = "s3cret"
                elif "configMapKeyRef" in value_from:
                    ref = value_from["configMapKeyRef"]
                    assert ref["name"] in config_maps and ref["key"] in config_maps[ref["name"]], (
                        f"{where}: {var['name']} -> missing {ref}"
                    )
                    env[var["name"]] = config_maps[ref["name"]][ref["key"]]
                else:
                    env[var["name"]] = str(var.get("value", ""))
            if is_project_image(container["image"]):
                check_settings_env(env, where, tmp_path, monkeypatch)


def test_k8s_ports_and_services() -> None:
    docs = manifests()
    workloads = [d for _, d in docs if d["kind"] in WORKLOADS]
    for _, svc in ((f, d) for f, d in docs if d["kind"] == "Service"):
        selector = svc["spec"]["selector"]
        matched = [
            w
            for w in workloads
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert matched, f"Service {svc['metadata']['name']} selects no workload"
        ports = [p for w in matched for c in pod_spec(w)["containers"] for p in c.get("ports", [])]
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            if isinstance(target, int):
                assert target in {p["containerPort"] for p in ports}, (
                    f"Service {svc['metadata']['name']}: no container port {target}"
                )
            else:
                assert target in {p.get("name") for p in ports}, (
                    f"Service {svc['metadata']['name']}: no container port named {target}"
                )
    for workload in workloads:
        for container in pod_spec(workload)["containers"]:
            names = {p.get("name") for p in container.get("ports", [])} | {
                p["containerPort"] for p in container.get("ports", [])
            }
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                spec = container.get(probe, {})
                for kind in ("httpGet", "tcpSocket"):
                    if kind in spec:
                        assert spec[kind]["port"] in names, (
                            f"{workload['metadata']['name']}: {probe} port {spec[kind]['port']}"
                        )


def test_k8s_workers_and_dashboard() -> None:
    docs = {
        (d["kind"], d["metadata"]["name"]): d
        for _, d in manifests()
        if d["kind"] != "Kustomization"
    }
    (worker,) = [d for (kind, _), d in docs.items() if kind == "StatefulSet"]
    config = next(d["data"] for (kind, _), d in docs.items() if kind == "ConfigMap")
    partitions = int(
        config.get("TOUCHPOINT_PARTITIONS", Settings.model_fields["partitions"].default)
    )
    assert 1 <= worker["spec"]["replicas"] <= partitions, "more workers than partitions would idle"
    assert ("Service", worker["spec"]["serviceName"]) in docs, (
        "the StatefulSet's service does not exist"
    )
    assert docs[("Service", worker["spec"]["serviceName"])]["spec"].get("clusterIP") == "None"
    assert [c["command"] for c in pod_spec(worker)["containers"]] == [["touchpoint", "worker"]]
    worker_port = int(config.get("TOUCHPOINT_WORKER_WEB_PORT", 6066))
    assert worker_port in {
        p["containerPort"] for c in pod_spec(worker)["containers"] for p in c["ports"]
    }
    assert (
        config.get("TOUCHPOINT_WORKER_WEB_HOST") == "0.0.0.0"
        and config.get("TOUCHPOINT_DASHBOARD_HOST") == "0.0.0.0"
    )
    assert (
        config.get("TOUCHPOINT_EMBEDDED_BROKER") == "false"
        and config.get("TOUCHPOINT_EMBEDDED_CLICKHOUSE") == "false"
    )
    dashboards = [d for (kind, _), d in docs.items() if kind == "Deployment"]
    assert [c["command"] for d in dashboards for c in pod_spec(d)["containers"]] == [
        ["python", "-m", "pipeline.dashboard"]
    ]
    dashboard_port = int(config.get("TOUCHPOINT_DASHBOARD_PORT", 8080))
    assert dashboard_port in {
        p["containerPort"]
        for d in dashboards
        for c in pod_spec(d)["containers"]
        for p in c["ports"]
    }
    (job,) = [d for (kind, _), d in docs.items() if kind == "Job"]
    commands = [c["command"] for c in containers(job)]
    assert commands == [["touchpoint", "create-topics"], ["touchpoint", "migrate"]]
    for (kind, name), doc in docs.items():
        if kind in WORKLOADS:
            security = pod_spec(doc).get("securityContext", {})
            assert security.get("runAsNonRoot") is True, f"{kind}/{name} may run as root"
