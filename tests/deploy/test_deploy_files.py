"""The deployment files (``deploy/``, ``.dockerignore``) against the code they start.

Offline and without Docker or Helm: each test checks a way these files can go wrong while the
code moves on — a COPY of a file that is gone or ignored, a setting the control plane does not
read, a worker command line its parser refuses or that listens on loopback only, a value a
template uses that ``values.yaml`` lacks, a secret written into a file. What is compared
against is derived from the sources (the settings' env helpers, the worker's argument parser,
``setup.py``), not restated here. The probe the images run is exercised against the worker's
real admin endpoint.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import ipaddress
import json
import re
import subprocess
import threading
import tomllib
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import ModuleType
from typing import Any

import pytest
import yaml

from proxyworker import admin, fleet
from proxyworker.__main__ import _arguments
from proxyworker.config.schema import Admin, Listen, WorkerConfig
from tests.deploy.readers import (
    CHART,
    COMPOSE,
    DEPLOY,
    DOCKERFILE,
    ROOT,
    TEMPLATES,
    block,
    chain,
    compose,
    copies,
    copy_sources,
    dockerfile,
    dockerignored,
    interpolate,
    leaves,
    lookup,
    render_value_references,
    required_secrets,
    settings_environment,
    template_texts,
    values,
)


def worker_argv(args: list[str]) -> Any:
    """The worker's own parser on ``args``; a refusal fails the test with its message."""
    try:
        return _arguments(args)
    except SystemExit:
        pytest.fail(f"python -m proxyworker refuses {args}")


def addresses(args: Any) -> fleet.Pinned:
    """Where a fleet worker started with ``args`` listens for clients and for admin, by the
    worker's own rule (``fleet.pin``), under a snapshot that leaves both on loopback, as the
    control plane's default ``SQLPROXY_FLEET_ADMIN_HOST`` does: only the arguments can move
    them off it."""
    snapshot = WorkerConfig(listen=Listen(host="127.0.0.1"), admin=Admin(host="127.0.0.1"))
    return fleet.pin(snapshot, args.listen, args.admin_port, args.admin_host)


def loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_probe() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sqlproxy_probe", DEPLOY / "docker/probe.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- Dockerfile ------------------------------------------------------------------------------


def test_it_builds_a_worker_and_a_controlplane_target_on_the_python_the_project_needs() -> None:
    stages = dockerfile()
    assert {"worker", "controlplane"} <= stages.keys()
    bases = {stage.base for stage in stages.values() if stage.base not in stages}
    assert bases == {"python:3.11-slim-bookworm"}
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11"


def test_every_file_the_dockerfile_copies_is_in_the_build_context() -> None:
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    for source_stage, sources in copies(list(dockerfile().values())):
        if source_stage is None:
            for source in sources:
                assert list(ROOT.glob(source.rstrip("/"))), f"COPY {source}: no such file"
                assert not dockerignored(source), f"COPY {source}: left out by .dockerignore"
                inside = [f for f in tracked if f.startswith(source.rstrip("/") + "/")]
                left_out = [f for f in inside if dockerignored(f)]
                assert not left_out, f"COPY {source}: .dockerignore leaves out {left_out[:5]}"


def test_the_build_context_leaves_out_local_state_and_local_builds() -> None:
    for path in [
        ".git/HEAD",
        ".venv/bin/python",
        ".run/worker.log",
        "tests/clients/node/node_modules/pg/package.json",
        "build/mypyc/proxyworker.c",
        "proxyworker__mypyc.cpython-311-x86_64-linux-gnu.so",
        "proxyworker/server.cpython-311-x86_64-linux-gnu.so",
        "proxyworker/compiled.json",
        "proxyworker/__pycache__/server.cpython-311.pyc",
        "deploy/.env",
    ]:
        assert dockerignored(path), path
    assert not dockerignored("proxyworker/server.py")


def test_every_requirements_file_it_installs_exists_and_was_copied_before() -> None:
    stages = dockerfile()
    installed: list[str] = []
    for name in stages:
        copied: list[str] = []
        for op, rest in [step for stage in chain(stages, name) for step in stage.steps]:
            if op == "COPY":
                copied += copy_sources(rest)[1]
            if op != "RUN":
                continue
            for command in re.findall(r"pip install[^&;]*", rest):
                for path in re.findall(r"-r\s+(\S+)", command):
                    installed.append(path)
                    assert any(path.startswith(c.rstrip("/")) for c in copied), path
    assert "requirements/worker.txt" in installed and "requirements/controlplane.txt" in installed
    pending = [ROOT / path for path in installed]
    while pending:  # the files they include with -r, in turn
        path = pending.pop()
        assert path.exists(), f"{path.relative_to(ROOT)} does not exist"
        for line in path.read_text().splitlines():
            if line.startswith("-r "):
                pending.append(path.parent / line[3:].strip())


def test_the_image_compiles_the_worker_as_make_build_does() -> None:
    stages = dockerfile()
    group = re.search(r'group_name="(\w+)"', (ROOT / "setup.py").read_text())
    assert group is not None
    builder = next(s for s in stages.values() if any("build_ext" in r for _, r in s.steps))
    copied: list[str] = []
    runs = []
    for op, rest in [step for stage in chain(stages, builder.name) for step in stage.steps]:
        if op == "RUN" and "build_ext" in rest:
            break
        if op == "COPY":
            copied += copy_sources(rest)[1]
        if op == "RUN":
            runs.append(rest)
    # setup.py reads proxyworker/compiled.py; mypy its [tool.mypy] in pyproject.toml.
    assert {"setup.py", "pyproject.toml", "proxyworker/"} <= set(copied)
    assert any("requirements/build.txt" in run for run in runs)
    assert any("gcc" in run for run in runs)
    for target in ("worker", "controlplane"):
        built = [
            source
            for frm, sources in copies(chain(stages, target))
            if frm == builder.name
            for source in sources
        ]
        assert any(f"{group.group(1)}__mypyc" in src for src in built), target
        assert any(src.rstrip("/").endswith("/proxyworker") for src in built), target


def test_its_targets_run_as_a_user_it_creates_not_root() -> None:
    stages = dockerfile()
    for target in ("worker", "controlplane"):
        steps = [step for stage in chain(stages, target) for step in stage.steps]
        users = [rest.split(":")[0] for op, rest in steps if op == "USER"]
        assert users and users[-1] not in ("root", "0"), target
        assert any(op == "RUN" and "useradd" in rest and users[-1] in rest for op, rest in steps)


def test_the_worker_target_starts_the_worker_and_probes_its_default_admin_port() -> None:
    worker = dockerfile()["worker"]
    steps = dict(worker.steps)
    assert json.loads(steps["ENTRYPOINT"]) == ["python", "-m", "proxyworker"]
    worker_argv(json.loads(steps["CMD"]))
    check = json.loads(steps["HEALTHCHECK"].split("CMD", 1)[1])
    assert check == ["sqlproxy-probe", f"http://127.0.0.1:{Admin().port}/healthz"]
    assert {str(Listen().port), str(Admin().port)} <= set(steps["EXPOSE"].split())
    controlplane = dict(dockerfile()["controlplane"].steps)
    assert json.loads(controlplane["CMD"])[0] == "daphne"


# --- the probe ---------------------------------------------------------------------------------


async def test_the_probe_follows_the_worker_s_own_admin_endpoint() -> None:
    probe = load_probe().probe
    verdict: dict[str, str] = {"configuration": "no configuration yet"}

    async def ready() -> dict[str, str]:
        return verdict

    server = await admin.serve("127.0.0.1", 0, ready)
    port = server.sockets[0].getsockname()[1]
    try:
        assert await asyncio.to_thread(probe, f"http://127.0.0.1:{port}/healthz") is None
        refused = await asyncio.to_thread(probe, f"http://127.0.0.1:{port}/readyz")
        assert refused is not None and "503" in refused and "no configuration yet" in refused
        verdict = {"app": "ok"}
        assert await asyncio.to_thread(probe, f"http://127.0.0.1:{port}/readyz") is None
        assert await asyncio.to_thread(probe, f"tcp://127.0.0.1:{port}") is None
    finally:
        server.close()
        await server.wait_closed()
    assert await asyncio.to_thread(probe, f"tcp://127.0.0.1:{port}", 1.0) is not None
    assert await asyncio.to_thread(probe, f"http://127.0.0.1:{port}/healthz", 1.0) is not None


def test_the_probe_ignores_proxies_and_refuses_what_it_cannot_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Healthy(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Healthy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    probe = load_probe()
    try:
        monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # discard: nothing answers
        assert probe.probe(f"http://127.0.0.1:{server.server_port}/healthz") is None
    finally:
        server.shutdown()
        server.server_close()
    assert probe.probe("https://127.0.0.1:1/healthz") is not None
    assert probe.probe("http:///healthz") is not None
    assert probe.main([]) == 2


# --- compose.yml ----------------------------------------------------------------------------


def controlplane_services(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services = spec["services"].items()
    found = {n: s for n, s in services if s.get("build", {}).get("target") == "controlplane"}
    assert {"migrate", "controlplane", "ingest", "celery-worker", "celery-beat"} <= found.keys()
    return found


def test_compose_declares_what_its_services_use_and_waits_for_what_they_need() -> None:
    spec = compose()
    assert set(spec) - {"name", "services", "volumes", "networks", "secrets", "configs"} <= {
        key for key in spec if key.startswith("x-")
    }
    services: dict[str, dict[str, Any]] = spec["services"]
    stages = dockerfile()
    for name, service in services.items():
        assert "image" in service, name
        if "build" in service:
            build = service["build"]
            context = (COMPOSE.parent / build["context"]).resolve()
            assert context == ROOT and context / build["dockerfile"] == DOCKERFILE, name
            assert build["target"] in stages, name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in (spec.get("volumes") or {}), f"{name}: volume {source}"
        for needed, how in service.get("depends_on", {}).items():
            assert needed in services, f"{name} depends on {needed}"
            if how["condition"] == "service_healthy":
                assert "healthcheck" in services[needed], f"{name} waits for {needed}'s health"
            elif how["condition"] == "service_completed_successfully":
                assert services[needed].get("restart") == "no", f"{needed} is not a one-shot"
    assert services["worker"]["build"]["target"] == "worker"


def test_compose_passes_the_control_plane_only_settings_it_reads() -> None:
    names, _ = settings_environment()
    for name, service in controlplane_services(compose()).items():
        unknown = set(service["environment"]) - names
        assert not unknown, f"{name}: the settings read no {sorted(unknown)}"


def test_compose_writes_no_secret_down_and_requires_each_one() -> None:
    spec = compose()
    _, secrets = settings_environment()
    required = re.compile(r"\$\{\w+:\?[^}]+\}")
    # A URL whose password is such a variable (checked for every URL of the file below).
    url_of_required = re.compile(r"\w+://[^:/@\s]*:\$\{\w+:\?[^}]+\}@\S+")
    for name, service in controlplane_services(spec).items():
        env = service["environment"]
        for secret in secrets:
            given = env.get(secret) or env.get(f"{secret}_FILE")
            if secret in required_secrets():
                assert given is not None, f"{name}: no {secret}"
            if given is not None:
                assert (
                    f"{secret}_FILE" in env
                    or required.fullmatch(given)
                    or url_of_required.fullmatch(given)
                ), f"{name}: {secret}"
    for name, service in spec["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|AUTH", key) and not key.endswith("_FILE"):
                assert required.fullmatch(str(value)), f"{name}: {key} is not ${{VAR:?...}}"
    text = COMPOSE.read_text()
    for password in re.findall(r"://[^:/@\s]*:([^@\s]+)@", text):
        assert required.fullmatch(password), f"a password in a URL: {password}"
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
        interpolate(json.dumps(spec["services"]["postgres"]), {})


def test_compose_runs_a_worker_its_parser_accepts_reachable_on_the_network() -> None:
    spec = compose()
    worker = spec["services"]["worker"]
    env = {"REDIS_PASSWORD": "0123abcd"}
    args = worker_argv([interpolate(word, env) for word in worker["command"]])
    # The URL (with its password) from the environment, kept out of the process list.
    assert args.control_plane is None and args.control_plane_env
    redis_url = interpolate(worker["environment"][args.control_plane_env], env)
    assert redis_url == "redis://:0123abcd@redis:6379/0"
    assert not any("0123abcd" in word for word in worker["command"])
    assert "redis" in spec["services"]
    assert args.worker_id
    bound = addresses(args)
    assert not loopback(bound.listen[0]), bound.listen
    assert f"{bound.listen[1]}:{bound.listen[1]}" in worker["ports"]
    mounted = [volume.split(":")[1] for volume in worker["volumes"]]
    assert args.state_dir in mounted
    # Admin on every IPv4 address: other containers (a scraper) reach it, and so does the
    # health check, which Docker runs inside the container on 127.0.0.1.
    assert bound.admin[0] == "0.0.0.0", f"the admin endpoint listens on {bound.admin[0]}"
    assert worker["healthcheck"]["test"] == [
        "CMD",
        "sqlproxy-probe",
        f"http://127.0.0.1:{bound.admin[1]}/healthz",
    ]
    published = [str(port).rsplit(":", 1)[-1] for port in worker["ports"]]
    assert str(bound.admin[1]) in published, "the admin port is published as another one"
    # The control plane's redis is the worker's.
    for service in controlplane_services(spec).values():
        assert interpolate(service["environment"]["REDIS_URL"], env) == redis_url
        streams = service["environment"]["SQLPROXY_STREAM_WORKER"]
        assert streams == f"worker:{args.listen[1]}"


def test_the_control_plane_commands_name_what_exists() -> None:
    from django.core.management import get_commands

    commands = [service["command"] for service in controlplane_services(compose()).values()]
    commands += [json.loads(dict(dockerfile()["controlplane"].steps)["CMD"])]
    for command in commands:
        if command[:2] == ["python", "manage.py"]:
            assert command[2] in get_commands(), command
        elif command[0] == "daphne":
            module, _, attribute = command[-1].partition(":")
            assert hasattr(importlib.import_module(module), attribute), command
        else:
            assert command[:3] == ["celery", "-A", "controlplane"], command
            assert command[3] in ("worker", "beat"), command
            assert hasattr(importlib.import_module("controlplane.celery"), "app")


# --- the Helm chart ----------------------------------------------------------------------------


def test_the_chart_is_a_helm_3_chart_of_this_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == CHART.name
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart["version"])
    # The images' default tag: what the project calls itself.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]


def test_every_value_a_template_uses_is_in_values_yaml_and_every_value_is_used() -> None:
    tree = values()
    used = {
        path
        for text in template_texts().values()
        for path in re.findall(r"\.Values\.([A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*)", text)
    }
    for path in used:
        lookup(tree, path)
    unused = [p for p in leaves(tree) if not any(p == u or p.startswith(f"{u}.") for u in used)]
    assert not unused, f"values nothing reads: {unused}"


def test_the_templates_close_their_blocks_and_include_only_defined_helpers() -> None:
    texts = template_texts()
    defined = set(re.findall(r'\{\{-?\s*define\s+"([^"]+)"', "".join(texts.values())))
    for name, text in texts.items():
        assert text.count("{{") == text.count("}}"), name
        depth = 0
        for keyword in re.findall(r"\{\{-?\s*(if|with|range|define|end)\b", text):
            depth += -1 if keyword == "end" else 1
            assert depth >= 0, f"{name}: an end too many"
        assert depth == 0, f"{name}: a block left open"
        for included in re.findall(r'include\s+"([^"]+)"', text):
            assert included in defined, f"{name}: no define {included!r}"
        assert not re.search(r"^kind:\s*Secret\b", text, re.M), f"{name} creates a Secret"


def worker_container() -> tuple[str, Any]:
    """The worker Deployment's template text and its container's arguments, parsed by the
    worker's parser with the variables Kubernetes expands put in."""
    text = (TEMPLATES / "worker-deployment.yaml").read_text()
    args_yaml = render_value_references(block(text, "args"))
    env_names = set(re.findall(r"^\s*- name: (\w+)$", block(text, "env"), re.M))
    substitutes = {"POD_NAME": "sqlproxy-worker-0"}
    argv = []
    for word in yaml.safe_load(args_yaml):
        for variable in re.findall(r"\$\((\w+)\)", word):
            assert variable in env_names, f"$({variable}) is not in the container's env"
        argv.append(re.sub(r"\$\((\w+)\)", lambda m: substitutes[m.group(1)], word))
    return text, worker_argv(argv)


def test_the_chart_runs_workers_its_parser_accepts_reachable_on_the_pod_address() -> None:
    text, args = worker_container()
    tree = values()
    assert args.worker_id == "sqlproxy-worker-0"
    bound = addresses(args)
    assert bound.listen == ("0.0.0.0", tree["worker"]["port"])
    # The kubelet's probes and Prometheus connect to the pod's address, not to loopback.
    assert not loopback(bound.admin[0]), f"the admin endpoint listens on {bound.admin[0]}"
    assert bound.admin[1] == tree["worker"]["adminPort"]
    assert args.workers == tree["worker"]["processes"]
    mounts = yaml.safe_load(render_value_references(block(text, "volumeMounts")))
    assert args.state_dir in [mount["mountPath"] for mount in mounts]


def test_the_chart_gives_workers_the_redis_url_as_a_file_not_an_argument() -> None:
    """Its password would be in every process listing on the node (and the supervisor passes
    its arguments on to each worker process)."""
    text, args = worker_container()
    assert args.control_plane is None and args.control_plane_file
    directory, name = args.control_plane_file.rsplit("/", 1)
    mounts = yaml.safe_load(render_value_references(block(text, "volumeMounts")))
    (mount,) = [m for m in mounts if m["mountPath"] == directory]
    assert mount.get("readOnly") is True
    secret_name = re.sub(r"\{\{-?\s*include [^}]*\}\}", "the-secret", block(text, "volumes"))
    volumes = yaml.safe_load(render_value_references(secret_name))
    (volume,) = [v for v in volumes if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "the-secret"
    items = {item["path"]: item["key"] for item in volume["secret"]["items"]}
    assert items[name] == values()["secrets"]["keys"]["redisUrl"]
    assert "REDIS_URL" not in block(text, "env")


def test_the_chart_probes_and_scrapes_workers_on_the_admin_port_they_listen_on() -> None:
    text, args = worker_container()
    admin_port = addresses(args).admin[1]
    ports = yaml.safe_load(render_value_references(block(text, "ports")))
    named = {port["name"]: port["containerPort"] for port in ports}
    assert named.get("admin") == admin_port, named
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        spec = yaml.safe_load(render_value_references(block(text, probe)))
        assert set(spec) & {"exec", "tcpSocket", "grpc"} == set(), probe
        get = spec["httpGet"]
        assert get["path"] == path and get.get("scheme", "HTTP") == "HTTP", probe
        port = named[get["port"]] if isinstance(get["port"], str) else get["port"]
        assert port == admin_port, f"{probe} on port {get['port']}"
    # Prometheus discovers the pods by their annotations, on by default.
    assert values()["worker"]["metrics"]["scrape"] is True
    guarded = re.search(
        r"\{\{-?\s*if \.Values\.worker\.metrics\.scrape\s*\}\}(.*?)\{\{-?\s*end", text, re.S
    )
    assert guarded is not None
    annotations = yaml.safe_load(render_value_references(guarded.group(1)))
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(admin_port)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_the_chart_gives_the_control_plane_only_settings_it_reads() -> None:
    names, _ = settings_environment()
    helpers = (TEMPLATES / "_helpers.tpl").read_text()
    env_block = re.search(r'define "sqlproxy\.controlplane\.env"(.*?)\{\{-? end', helpers, re.S)
    assert env_block is not None
    given = set(re.findall(r"^- name: (\w+)$", env_block.group(1), re.M))
    given |= set(values()["controlplane"]["settings"])
    assert not given - names, f"the settings read no {sorted(given - names)}"
    assert {f"{secret}_FILE" for secret in required_secrets()} <= given
    for text in template_texts().values():
        if "command:" in text and "sqlproxy.controlplane.env" in text:
            assert "sqlproxy.controlplane.volumes" in text  # where the _FILE secrets are


def test_the_values_hold_no_secret() -> None:
    text = (CHART / "values.yaml").read_text()
    uncommented = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    assert not re.search(r"://[^:/@\s]*:[^@\s]+@", uncommented)
    for path in leaves(values()):
        if re.search(r"password|secretkey|token", path, re.I):
            assert path.startswith("secrets.keys."), f"{path}: a secret belongs in the Secret"
