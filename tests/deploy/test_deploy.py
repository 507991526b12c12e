"""deploy/: Kubernetes manifests against the Kubernetes schemas, plus the cross-references no
schema checks; compose, Dockerfile and systemd unit checked for what an operator relies on.

deploy/k8s/config.yml and deploy/k8s/prometheusrule.yml are generated from prober.yml,
checks/ and deploy/prometheus/rules/; after changing those, regenerate them with
    .venv/bin/python tests/deploy/test_deploy.py --write
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
RULES = DEPLOY / "prometheus" / "rules"
REGENERATE = ".venv/bin/python tests/deploy/test_deploy.py --write"
CORE_KINDS = {"ConfigMap", "Deployment", "StatefulSet", "Service"}
OPERATOR_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings as `|` blocks, so generated manifests read like the sources."""


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_BlockDumper.add_representer(str, _represent_str)


def _dump(header: str, documents: list[dict[str, Any]]) -> str:
    body = yaml.dump_all(documents, Dumper=_BlockDumper, sort_keys=False, width=1000)
    return header + body


def render_config() -> str:
    """ConfigMaps holding prober.yml and checks/*.yml exactly as shipped."""
    labels = {"app.kubernetes.io/name": "prober"}
    checks = {path.name: path.read_text() for path in sorted((REPO / "checks").glob("*.yml"))}
    return _dump(
        "# Generated from prober.yml and checks/ by `python tests/deploy/test_deploy.py --write`;"
        " edit\n"
        "# those and regenerate. Mounted at /etc/prober and /etc/prober/checks, so prober.yml's\n"
        "# `check_files: [checks/*.yml]` finds the checks. `kubectl apply` updates reach running\n"
        "# pods within about a minute; --config.auto-reload-interval (or SIGHUP) applies them.\n",
        [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "prober-config", "labels": labels},
                "data": {"prober.yml": (REPO / "prober.yml").read_text()},
            },
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "prober-checks", "labels": labels},
                "data": checks,
            },
        ],
    )


def render_prometheus_rule() -> str:
    """A PrometheusRule holding every group of deploy/prometheus/rules/*.yml."""
    groups = []
    for path in sorted(RULES.glob("*.yml")):
        groups.extend(yaml.safe_load(path.read_text())["groups"])
    return _dump(
        "# Generated from deploy/prometheus/rules/*.yml by"
        " `python tests/deploy/test_deploy.py --write`;\n"
        "# edit those (and their promtool tests) and regenerate. Your Prometheus's\n"
        "# ruleSelector must match these labels.\n",
        [
            {
                "apiVersion": "monitoring.coreos.com/v1",
                "kind": "PrometheusRule",
                "metadata": {"name": "prober", "labels": {"app.kubernetes.io/name": "prober"}},
                "spec": {"groups": groups},
            }
        ],
    )


GENERATED: dict[Path, Callable[[], str]] = {
    K8S / "config.yml": render_config,
    K8S / "prometheusrule.yml": render_prometheus_rule,
}


def manifests() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(K8S.glob("*.yml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                yield f"{path.name}:{document['kind']}/{document['metadata']['name']}", document


def of_kind(*kinds: str) -> list[dict[str, Any]]:
    return [doc for _, doc in manifests() if doc["kind"] in kinds]


def pod_specs() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, pod template) for every Deployment and StatefulSet."""
    return [(w, w["spec"]["template"]) for w in of_kind("Deployment", "StatefulSet")]


def prober_args(container: dict[str, Any]) -> list[str]:
    return [str(a) for a in container.get("command", []) + container.get("args", [])]


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def _parses_as_prober_command(args: list[str]) -> None:
    """The flags are real: prober's own parser accepts them (exit 2 on an unknown flag)."""
    from prober.cli.main import build_parser

    build_parser().parse_args(args)


# Kubernetes


@pytest.mark.parametrize("path", sorted(GENERATED), ids=lambda p: p.name)
def test_generated_manifests_are_in_sync(path: Path) -> None:
    assert path.read_text() == GENERATED[path](), f"out of date: run {REGENERATE}"


@pytest.mark.parametrize(
    ("where", "document"), list(manifests()), ids=lambda v: v if isinstance(v, str) else ""
)
def test_manifest_is_valid(where: str, document: dict[str, Any]) -> None:
    assert document["metadata"]["name"], where
    if document["kind"] in CORE_KINDS:
        kubernetes_validate = pytest.importorskip("kubernetes_validate")
        kubernetes_validate.validate(document, kubernetes_validate.latest_version(), strict=True)
    else:
        assert document["kind"] in OPERATOR_KINDS, f"{where}: no schema check for this kind"
        assert document["apiVersion"] == "monitoring.coreos.com/v1", where
        _check_operator_resource(document)


def _check_operator_resource(document: dict[str, Any]) -> None:
    """The fields the Prometheus Operator CRDs require, and nothing they do not know."""
    spec = document["spec"]
    if document["kind"] == "PrometheusRule":
        assert set(spec) == {"groups"}
        for group in spec["groups"]:
            assert set(group) <= {"name", "interval", "rules", "limit"} and group["rules"]
            for rule in group["rules"]:
                # keep_firing_for: Prometheus 2.42 and the operator's Rule know it
                known = {"record", "alert", "expr", "for", "keep_firing_for", "labels"}
                assert set(rule) <= known | {"annotations"}
                assert ("record" in rule) != ("alert" in rule) and rule["expr"]
        return
    endpoints_key = "endpoints" if document["kind"] == "ServiceMonitor" else "podMetricsEndpoints"
    assert set(spec) <= {"jobLabel", "selector", "namespaceSelector", endpoints_key}
    assert spec["selector"]["matchLabels"]
    for endpoint in spec[endpoints_key]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}


def test_workload_selectors_match_their_pod_labels() -> None:
    for workload, template in pod_specs():
        selector = workload["spec"]["selector"]["matchLabels"]
        assert selector.items() <= template["metadata"]["labels"].items(), workload["metadata"]


def test_pods_mount_configmaps_that_exist_and_probe_named_ports() -> None:
    configmaps = {doc["metadata"]["name"]: doc for doc in of_kind("ConfigMap")}
    for workload, template in pod_specs():
        name = workload["metadata"]["name"]
        volumes = {v["name"]: v for v in template["spec"].get("volumes", [])}
        for volume in volumes.values():
            if "configMap" in volume:
                assert volume["configMap"]["name"] in configmaps, f"{name}: {volume}"
        for container in template["spec"]["containers"]:
            assert container["image"], name
            ports = {p["name"] for p in container["ports"]}
            for probe in ("livenessProbe", "readinessProbe"):
                assert container[probe]["httpGet"]["port"] in ports, f"{name}: {probe}"
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{name}: {mount}"
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["readOnlyRootFilesystem"] is True, name
        assert template["spec"]["securityContext"]["runAsNonRoot"] is True, name


def test_prober_pods_run_a_valid_command_with_their_vantage() -> None:
    for workload, template in pod_specs():
        if workload["metadata"]["labels"]["app.kubernetes.io/name"] != "prober":
            continue
        (container,) = template["spec"]["containers"]
        args = prober_args(container)
        _parses_as_prober_command(args)
        assert "--config.file=/etc/prober/prober.yml" in args
        assert "--web.listen-address=:9797" in args
        assert container["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
        env = env_of(container)
        assert env["PROBER_VANTAGE"] == template["metadata"]["labels"]["vantage"]


def test_statefulset_shards_count_matches_replicas() -> None:
    from prober.engine.shard import parse_shard

    services = {s["metadata"]["name"]: s for s in of_kind("Service")}
    (statefulset,) = of_kind("StatefulSet")
    replicas = statefulset["spec"]["replicas"]
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    env = env_of(container)
    assert env["PROBER_SHARD"] == "auto"
    assert int(env["PROBER_SHARD_COUNT"]) == replicas
    name = statefulset["metadata"]["name"]
    shards = {parse_shard("auto", {**env, "HOSTNAME": f"{name}-{i}"}) for i in range(replicas)}
    assert len(shards) == replicas
    governing = services[statefulset["spec"]["serviceName"]]
    assert governing["spec"]["clusterIP"] == "None"


def test_services_and_monitors_select_pods_by_named_port() -> None:
    pods = [template for _, template in pod_specs()]

    def selected(labels: dict[str, str]) -> list[dict[str, Any]]:
        return [t for t in pods if labels.items() <= t["metadata"]["labels"].items()]

    def port_names(templates: list[dict[str, Any]]) -> set[str]:
        return {p["name"] for t in templates for c in t["spec"]["containers"] for p in c["ports"]}

    services = of_kind("Service")
    for service in services:
        targets = selected(service["spec"]["selector"])
        assert targets, f"Service {service['metadata']['name']} selects no pod"
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names(targets)
    (monitor,) = of_kind("ServiceMonitor")
    wanted = monitor["spec"]["selector"]["matchLabels"].items()
    matched = [s for s in services if wanted <= s["metadata"]["labels"].items()]
    assert matched, "the ServiceMonitor selects no Service"
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in {p["name"] for s in matched for p in s["spec"]["ports"]}
    (pod_monitor,) = of_kind("PodMonitor")
    targets = selected(pod_monitor["spec"]["selector"]["matchLabels"])
    assert targets
    for endpoint in pod_monitor["spec"]["podMetricsEndpoints"]:
        assert endpoint["port"] in port_names(targets)
    for doc in (monitor, pod_monitor):
        # The rules select job="prober": the job label comes from this label's value.
        assert doc["spec"]["jobLabel"] == "app.kubernetes.io/name"
        assert doc["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "prober"


def test_configmaps_hold_a_valid_config(tmp_path: Path) -> None:
    from prober.config.load import load_config

    for configmap in of_kind("ConfigMap"):
        directory = tmp_path / (
            "checks" if configmap["metadata"]["name"] == "prober-checks" else ""
        )
        directory.mkdir(exist_ok=True)
        for key, text in configmap["data"].items():
            (directory / key).write_text(text)
    config = load_config(tmp_path / "prober.yml", env={"PROBER_VANTAGE": "eu-west"})
    assert config.settings.labels == {"vantage": "eu-west"}
    assert len(config.checks) >= 5


@pytest.mark.integration
def test_prometheus_rule_groups_pass_promtool(tmp_path: Path) -> None:
    from tests.support.processes import require_tool

    promtool = require_tool("promtool")
    (rule,) = of_kind("PrometheusRule")
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    run = subprocess.run(
        [promtool, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr


# Compose and Prometheus for compose


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "compose.yml").read_text()))


def test_compose_runs_the_whole_stack_from_files_that_exist() -> None:
    services = _compose()["services"]
    assert set(services) == {"sim", "reference", "prober", "prometheus", "alertmanager", "grafana"}
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {volume}"
    prober = services["prober"]
    _parses_as_prober_command(prober["command"])
    assert "--web.listen-address=:9797" in prober["command"]
    assert prober["environment"]["PLATFORM_URL"] == "http://sim:8180"
    assert services["sim"]["command"] == [
        "sim", "--listen", "0.0.0.0:8180", "--grpc-listen", "0.0.0.0:8182"
    ]  # fmt: skip
    assert prober["environment"]["PLATFORM_GRPC"] == "sim:8182"
    _parses_as_prober_command(services["sim"]["command"])
    mounts = dict(v.split(":")[:2] for v in services["prometheus"]["volumes"] if v.startswith("."))
    assert mounts["./prometheus/prometheus-compose.yml"] == "/etc/prometheus/prometheus.yml"
    assert mounts["./prometheus/rules"] == "/etc/prometheus/rules"
    grafana = dict(v.split(":")[:2] for v in services["grafana"]["volumes"])
    assert grafana["./grafana/provisioning"] == "/etc/grafana/provisioning"


def test_compose_prometheus_scrapes_the_prober_service() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus-compose.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "prober"
    assert job["static_configs"][0]["targets"] == ["prober:9797"]
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    top = yaml.safe_load((REPO / "prometheus.yml").read_text())
    assert top["scrape_configs"][0]["job_name"] == job["job_name"]


@pytest.mark.integration
def test_compose_prometheus_config_passes_promtool() -> None:
    from tests.support.processes import require_tool

    promtool = require_tool("promtool")
    path = DEPLOY / "prometheus" / "prometheus-compose.yml"
    run = subprocess.run(
        [promtool, "check", "config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr


# Dockerfile


def _instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_dockerfile_is_slim_non_root_with_healthcheck() -> None:
    instructions = _instructions()
    froms = [arg for op, arg in instructions if op == "FROM"]
    assert froms and all(f.split()[0] == "python:3.11-slim" for f in froms)
    final = instructions[max(i for i, (op, _) in enumerate(instructions) if op == "FROM") :]
    users = [arg for op, arg in final if op == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    (healthcheck,) = [arg for op, arg in final if op == "HEALTHCHECK"]
    entrypoint = json.loads(next(arg for op, arg in final if op == "ENTRYPOINT"))
    command = json.loads(next(arg for op, arg in final if op == "CMD"))
    assert entrypoint == ["prober"]
    _parses_as_prober_command(command)
    # The address comes from the environment, which the HEALTHCHECK reads too.
    assert not any(arg.startswith("--web.listen-address") for arg in command)
    env = " ".join(arg for op, arg in final if op == "ENV").split()
    assert "PROBER_WEB_LISTEN_ADDRESS=:9797" in env
    # `prober healthcheck` GETs /-/healthy there (tests/cli/test_cli.py runs it).
    assert json.loads(healthcheck.split(" CMD ", 1)[1]) == ["prober", "healthcheck"]


def test_dockerfile_installs_dependencies_only_from_the_hashed_lock() -> None:
    runs = [arg for op, arg in _instructions() if op == "RUN" and "pip " in arg]
    installs = [arg for arg in runs if "pip install" in arg]
    (locked,) = [arg for arg in installs if "-r /tmp/requirements.lock" in arg]
    assert "--require-hashes" in locked and "--no-deps" in locked
    # Everything else pip touches is prober's own wheel, without resolving dependencies.
    for arg in runs:
        assert arg is locked or "--no-deps" in arg, arg
    assert any("pip check" in arg for arg in runs)


def test_dockerfile_copies_only_files_the_dockerignore_lets_through() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for op, arg in _instructions():
        if op == "COPY" and not arg.startswith("--from"):
            *sources, _ = shlex.split(arg)
            for source in sources:
                assert (REPO / source).exists(), source
                assert source.rstrip("/") in allowed, f"{source} is not in the build context"


# systemd


UNIT = DEPLOY / "systemd" / "prober.service"
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "PrivateTmp": "yes",
    "CapabilityBoundingSet": "",
    "DynamicUser": "yes",
    "ProtectHome": "yes",
}


def _unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_systemd_unit_is_hardened_and_reloads_with_sighup() -> None:
    settings = _unit_settings()
    for key, value in HARDENING.items():
        assert settings.get(key) == [value], key
    assert "AF_INET" in settings["RestrictAddressFamilies"][0]
    assert settings["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    (exec_start,) = settings["ExecStart"]
    program, *args = shlex.split(exec_start.replace("$PROBER_ARGS", ""))
    assert program.endswith("/prober")
    _parses_as_prober_command(args)


def test_systemd_unit_starts_after_time_sync_with_a_raised_fd_limit() -> None:
    settings = _unit_settings()
    for key in ("After", "Wants"):
        assert "time-sync.target" in " ".join(settings[key]).split(), key
    (limit,) = settings["LimitNOFILE"]
    assert int(limit) >= 65536


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed; the unit is parsed by the test above")
    # verify also checks that ExecStart exists: point it at a program that does.
    unit = tmp_path / "prober.service"
    unit.write_text(re.sub(r"/opt/prober/bin/prober", "/bin/true", UNIT.read_text()))
    run = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "Unknown" not in output and "ignoring" not in output, output


def _write_generated() -> None:
    for path, render in GENERATED.items():
        path.write_text(render())
        print(f"wrote {path.relative_to(REPO)}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(f"usage: {REGENERATE}")
    sys.path.insert(0, str(REPO))
    _write_generated()
