"""The deployment files under deploy/: the compose file and the Kubernetes manifests are valid against their
published schemas (the Compose Specification's, vendored by check-jsonschema; Kubernetes' own, shipped by
kubernetes-validate), they say what docs/scale-out.md promises (replicas sharing Redis, probes on /ready and
/health, a drain that fits the grace period), and the image's install steps work: run into a fresh venv, as the
Dockerfile runs them (this machine has no container runtime)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from modelrouter import parse_config
from modelrouter.config.load import parse_config_text

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
KUBERNETES_VERSION = "1.30.0"


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_the_compose_file_is_valid_compose() -> None:
    schema = json.loads(
        resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    )
    compose = _yaml(DEPLOY / "compose" / "compose.yaml")
    jsonschema.validate(compose, schema)
    services = compose["services"]
    assert set(services) >= {"gateway", "lb", "redis", "postgres", "prometheus", "grafana"}
    assert services["gateway"]["deploy"]["replicas"] == 3
    # Every file the compose file mounts is in the repository.
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / "compose" / source).exists(), source


def test_the_compose_gateways_share_redis_and_postgresql() -> None:
    text = (DEPLOY / "compose" / "modelrouter.yaml").read_text()
    config = parse_config_text(text.replace("${POSTGRES_PASSWORD}", "pw"), "compose", require_services=True)
    assert (config.state.backend, config.state.url) == ("redis", "redis://redis:6379/0")
    assert config.store.database_url is not None
    assert config.store.database_url.startswith("postgresql+asyncpg://")
    grace = _yaml(DEPLOY / "compose" / "compose.yaml")["services"]["gateway"]["stop_grace_period"]
    assert int(grace.rstrip("s")) > config.server.drain_timeout


def _manifests() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, doc) for path in sorted(KUBERNETES.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text())
    ]


@pytest.mark.parametrize(("name", "manifest"), _manifests(), ids=[name for name, _ in _manifests()])
def test_each_manifest_is_valid_kubernetes(name: str, manifest: dict[str, Any]) -> None:
    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def test_the_deployment_probes_drains_and_names_its_replicas() -> None:
    kinds = {doc["kind"]: doc for _, doc in _manifests()}
    assert set(kinds) >= {
        "Deployment",
        "Service",
        "ConfigMap",
        "Secret",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    }
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert "preStop" in container["lifecycle"]
    replica = next(e for e in container["env"] if e["name"] == "MODELROUTER_REPLICA_ID")
    assert replica["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    config_text = kinds["ConfigMap"]["data"]["modelrouter.yaml"]
    values = {"${REDIS_PASSWORD}": "pw", "${POSTGRES_PASSWORD}": "pw"}
    for name, value in values.items():
        config_text = config_text.replace(name, value)
    config = parse_config(yaml.safe_load(config_text))
    assert config.state.backend == "redis"
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod["terminationGracePeriodSeconds"] > pre_stop + config.server.drain_timeout
    secret_keys = set(kinds["Secret"]["stringData"])
    assert {name[2:-1] for name in values} <= secret_keys  # every ${VAR} the config reads is in the Secret
    assert kinds["PodDisruptionBudget"]["spec"]["minAvailable"] < kinds["Deployment"]["spec"]["replicas"]


def _dockerfile_run(marker: str) -> str:
    """The RUN instruction of the build stage that contains ``marker``, its continuation lines joined."""
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if line.startswith("RUN ") and marker in line:
            return line[4:]
    raise AssertionError(f"no RUN with {marker!r} in deploy/Dockerfile")


def test_the_dockerfile_is_multi_stage_non_root_and_health_checked() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.MULTILINE)) == 2
    assert re.search(r"^USER modelrouter$", text, re.MULTILINE)
    assert "HEALTHCHECK" in text
    assert "/health" in text
    assert "modelrouter._speedups" in _dockerfile_run("pip install")


@pytest.mark.skipif(os.environ.get("MODELROUTER_SKIP_IMAGE_INSTALL") == "1", reason="asked to skip")
def test_the_images_install_steps_work_in_a_fresh_venv(tmp_path: Path) -> None:
    """The build stage's install, with /opt/modelrouter and /src replaced by a temporary venv and this checkout."""
    venv = tmp_path / "venv"
    command = _dockerfile_run("pip install").replace("/opt/modelrouter", str(venv)).replace(" . ", f" {ROOT} ")
    command = command.replace("python -m venv", f"{shlex.quote(sys.executable)} -m venv", 1)
    # Nothing of this checkout may be imported instead of what was installed (the helpers must have been built).
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=900, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    version = subprocess.run(
        [str(venv / "bin" / "modelrouter"), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert version.returncode == 0, version.stderr
