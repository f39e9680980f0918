"""docker-compose.yml is consistent: files exist, Pulse services run real `pulse` subcommands, scrapes line up."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from pulse.cli import _parser
from pulse.config import setting_docs

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
PULSE_VARS = {doc.var for doc in setting_docs().values()} | {"PULSE_LOG_LEVEL"}


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001
    return dict(action.choices)


def test_referenced_files_exist() -> None:
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source} missing"
        build = service.get("build")
        if build is not None:
            assert (ROOT / build / "Dockerfile").is_file()
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), line


def test_pulse_services_run_real_subcommands_with_known_settings() -> None:
    commands = _subcommands()
    pulse_services = {name: s for name, s in SERVICES.items() if s.get("build") == "."}
    assert {"engine-0", "engine-1", "gateway", "simulator"} <= set(pulse_services)
    for name, service in pulse_services.items():
        command = service["command"]
        assert command[0] in commands, f"{name}: {command[0]!r} is not a pulse subcommand"
        if command[0] != "run":  # run passes unknown options through to bytewax.run
            commands[command[0]].parse_args(command[1:])
        for var in service["environment"]:
            if var.startswith("PULSE_") or var in ("KAFKA_BOOTSTRAP", "REDIS_URL"):
                assert var in PULSE_VARS or var in ("KAFKA_BOOTSTRAP", "REDIS_URL"), f"{name}: unknown {var}"
    for depends in (s.get("depends_on", {}) for s in SERVICES.values()):
        assert set(depends) <= set(SERVICES)
    assert "ENTRYPOINT [\"pulse\"]" in (ROOT / "Dockerfile").read_text()


def test_prometheus_scrapes_engines_and_gateway_and_grafana_is_provisioned() -> None:
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = {job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
               for job in config["scrape_configs"]}
    engine_port = SERVICES["engine-0"]["environment"]["PULSE_METRICS_PORT"]
    assert sorted(targets["pulse-engine"]) == [f"engine-0:{engine_port}", f"engine-1:{engine_port}"]
    gateway_env = SERVICES["gateway"]["environment"]
    assert targets["pulse-gateway"] == [f"gateway:{gateway_env['PULSE_HTTP_PORT']}"]
    assert "PULSE_OPERATOR_TOKEN" in gateway_env and "PULSE_GATEWAY_SECRET" in gateway_env
    assert {"prometheus", "grafana"} <= set(SERVICES)

    datasource = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/pulse.yml").read_text())
    mounted = {v.split(":")[1]: v.split(":")[0] for v in SERVICES["grafana"]["volumes"]}
    dashboards = ROOT / mounted[provider["providers"][0]["options"]["path"]]
    dashboard = json.loads((dashboards / "pulse.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for metric in ("pulse_events_total", "pulse_decisions_total", "pulse_latency_seconds_bucket", "pulse_model_quality",
                   "pulse_dead_letters_total", "bytewax_kafka_consumer_lag", "pulse_ws_connections",
                   "pulse_gc_pause_seconds_sum", "pulse_experiment_lift", "pulse_experiment_srm_alarm"):
        assert metric in exprs, metric
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} == {uid}
