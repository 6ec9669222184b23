"""Checks everything in deploy/ with well-kept validators, and against the strata binary.

- Kubernetes manifests: parsed and validated (strict: unknown fields are errors) against the
  Kubernetes schemas bundled with kubernetes-validate.
- The compose file: dclint (the compose schema and its lint rules), no problem allowed.
- The systemd unit: `systemd-analyze verify`, no warning allowed.
- Every YAML file: yamllint.
- The Prometheus alert rules: `promtool check rules` and their unit tests (`promtool test
  rules observability/alerts.test.yml`).
- Every `STRATA_*` variable and `strata serve` flag they use is one `strata serve` accepts, and
  each configuration (a compose service, the pod of ordinal 0 and of a scale-up ordinal, the
  unit's ExecStart with its config file, the image's environment) parses: `strata serve
  --print-config` with exactly that environment and those flags succeeds.
- The compose file's certificate script runs, with the strata binary, in a scratch directory.

Run by node/tests/it/deploy.rs; scripts/setup installs the tools (deploy/requirements.txt into
deploy/.venv, deploy/package.json into deploy/node_modules).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent
VENV_BIN = DEPLOY / ".venv" / "bin"
# Read by strata's logging, not a serve flag.
EXTRA_ENV = {"STRATA_LOG"}

failures: list[str] = []


def fail(message: str) -> None:
    failures.append(message)
    print(f"FAIL {message}", file=sys.stderr)


def run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=False, capture_output=True, text=True, timeout=120, env=env)


def check_kubernetes(files: list[Path]) -> None:
    result = run([str(VENV_BIN / "kubernetes-validate"), "--strict", *map(str, files)])
    if result.returncode != 0 or "ERROR" in result.stdout + result.stderr:
        fail(f"kubernetes-validate:\n{result.stdout}{result.stderr}")
    passed = result.stdout.count(" passed for resource ") + result.stderr.count(
        " passed for resource "
    )
    documents = sum(1 for f in files for d in yaml.safe_load_all(f.read_text()) if d is not None)
    if passed != documents:
        fail(f"kubernetes-validate passed {passed} of {documents} resources")


def check_compose(compose: Path) -> None:
    dclint = DEPLOY / "node_modules" / ".bin" / "dclint"
    result = run([str(dclint), str(compose)])
    if result.returncode != 0 or "problem" in result.stdout + result.stderr:
        fail(f"dclint {compose.name}:\n{result.stdout}{result.stderr}")


def check_unit(unit: Path, strata: str) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / unit.name
        copy.write_text(unit.read_text().replace("/usr/local/bin/strata", strata))
        result = run(["systemd-analyze", "verify", str(copy)])
        if result.returncode != 0 or result.stdout.strip() or result.stderr.strip():
            fail(f"systemd-analyze verify {unit.name}:\n{result.stdout}{result.stderr}")


def check_alerts(rules: Path, tests: Path) -> None:
    for args in (["check", "rules", str(rules)], ["test", "rules", str(tests)]):
        result = run(["promtool", *args])
        if result.returncode != 0:
            fail(f"promtool {' '.join(args[:2])}:\n{result.stdout}{result.stderr}")


def check_yaml(files: list[Path]) -> None:
    result = run(
        [str(VENV_BIN / "yamllint"), "--strict", "-c", str(DEPLOY / ".yamllint")]
        + [str(f) for f in files]
    )
    if result.returncode != 0:
        fail(f"yamllint:\n{result.stdout}{result.stderr}")


def serve_env_vars(strata: str) -> set[str]:
    """Every variable `strata serve --help` names."""
    result = run([strata, "serve", "--help"])
    names = set(re.findall(r"\[env: (STRATA_[A-Z0-9_]+)", result.stdout))
    if not names:
        fail("strata serve --help names no environment variable")
    return names


def serve_flags(strata: str) -> set[str]:
    result = run([strata, "serve", "--help"])
    return set(re.findall(r"^\s+(?:-\w, )?(--[a-z0-9-]+)", result.stdout, re.MULTILINE))


def print_config(
    strata: str, what: str, env: dict[str, str], flags: list[str], known: set[str]
) -> None:
    """`strata serve --print-config` with exactly `env` (plus PATH) and `flags` succeeds."""
    for name in env:
        if name.startswith("STRATA_") and name not in known | EXTRA_ENV:
            fail(f"{what}: strata serve does not know {name}")
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
    result = run([strata, "serve", *flags, "--print-config"], env=clean)
    if result.returncode != 0:
        fail(f"{what}: strata serve {' '.join(flags)} --print-config:\n{result.stderr}")
        return
    print(f"ok   {what}: strata serve accepts its configuration")


def image_env(dockerfile: Path) -> dict[str, str]:
    """The ENV of the Dockerfile's last stage."""
    text = dockerfile.read_text().replace("\\\n", " ")
    last = text.rsplit("\nFROM ", 1)[-1]
    env: dict[str, str] = {}
    for line in last.splitlines():
        if line.startswith("ENV "):
            env.update(dict(re.findall(r"(\w+)=(\S+)", line)))
    return env


def variables_in(script: str) -> set[str]:
    return set(re.findall(r"\b(STRATA_[A-Z0-9_]+)", script))


def check_compose_config(compose: Path, strata: str, base: dict[str, str], known: set[str]) -> None:
    document = yaml.safe_load(compose.read_text())
    for name, service in document["services"].items():
        command = service.get("command") or []
        script = "\n".join(command) if isinstance(command, list) else str(command)
        if "environment" not in service:
            # The one-shot certificate maker: run its script for real, in a scratch directory.
            check_cert_script(script, strata, name)
            continue
        env = {**base, **{k: str(v) for k, v in service["environment"].items()}}
        for variable in variables_in(script):
            if variable not in known | EXTRA_ENV:
                fail(f"compose {name}: its command uses unknown {variable}")
        print_config(strata, f"compose service {name}", env, [], known)


def check_cert_script(script: str, strata: str, name: str) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        bindir = Path(scratch) / "bin"
        bindir.mkdir()
        (bindir / "strata").symlink_to(strata)
        tls = Path(scratch) / "tls"
        body = script.replace("$$", "$").replace("/etc/strata/tls", str(tls))
        env = {"PATH": f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
        for attempt in ("first", "second"):
            result = run(["/bin/sh", "-ec", body], env=env)
            if result.returncode != 0:
                fail(f"compose {name} ({attempt} start):\n{result.stdout}{result.stderr}")
                return
        wanted = ["ca.pem", "secret.key"] + [
            f"node-{n}.{ext}" for n in (1, 2, 3) for ext in ("pem", "key")
        ]
        missing = [f for f in wanted if not (tls / f).exists()]
        if missing:
            fail(f"compose {name}: its script made no {missing}")
        else:
            print(f"ok   compose service {name}: its script makes the CA, certificates and key")


def check_kubernetes_config(statefulset: Path, strata: str, known: set[str]) -> None:
    for document in yaml.safe_load_all(statefulset.read_text()):
        if not document or document.get("kind") != "StatefulSet":
            continue
        container = document["spec"]["template"]["spec"]["containers"][0]
        script = "\n".join(container.get("args", []))
        for variable in variables_in(script):
            if variable not in known | EXTRA_ENV:
                fail(f"StatefulSet: its script uses unknown {variable}")
        env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
        replicas = document["spec"]["replicas"]
        # The pod's own script decides its id and bootstrap: run it with `strata` replaced by
        # a printer of the environment it would exec with, for ordinal 0 and one past the
        # initial members.
        for ordinal in (0, replicas):
            pod = {**env, "POD_NAME": f"strata-{ordinal}"}
            shown = run(
                ["/bin/sh", "-ec", script.replace("exec strata serve", "env")],
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **pod},
            )
            if shown.returncode != 0:
                fail(f"StatefulSet script (ordinal {ordinal}):\n{shown.stderr}")
                continue
            final = dict(
                line.split("=", 1)
                for line in shown.stdout.splitlines()
                if line.startswith("STRATA_")
            )
            expect_join = ordinal >= replicas
            if final.get("STRATA_NODE_ID") != str(ordinal + 1) or (
                ("STRATA_JOIN" in final) != expect_join
            ):
                fail(f"StatefulSet script (ordinal {ordinal}) gave {final}")
            print_config(strata, f"StatefulSet pod of ordinal {ordinal}", final, [], known)


def check_unit_config(unit: Path, config: Path, strata: str, known: set[str]) -> None:
    text = unit.read_text()
    exec_start = re.search(r"^ExecStart=(\S+) (.*)$", text, re.MULTILINE)
    if not exec_start:
        fail(f"{unit.name}: no ExecStart")
        return
    args = exec_start.group(2).split()
    if args[:1] != ["serve"]:
        fail(f"{unit.name}: ExecStart does not run strata serve: {args}")
        return
    flags = [config.as_posix() if a == "/etc/strata/strata.toml" else a for a in args[1:]]
    known_flags = serve_flags(strata)
    for flag in (a for a in flags if a.startswith("--")):
        if flag not in known_flags:
            fail(f"{unit.name}: strata serve has no {flag}")
    env = dict(re.findall(r"^Environment=(\w+)=(\S*)$", text, re.MULTILINE))
    print_config(strata, f"{unit.name} with {config.name}", env, flags, known)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strata", required=True, help="the strata binary")
    strata = str(Path(parser.parse_args().strata).resolve())
    for tool in (VENV_BIN / "kubernetes-validate", VENV_BIN / "yamllint"):
        if not tool.exists():
            print(f"{tool} is missing: run scripts/setup", file=sys.stderr)
            return 2
    for command in ("systemd-analyze", "promtool"):
        if shutil.which(command) is None:
            print(f"{command} is missing: run scripts/setup", file=sys.stderr)
            return 2
    manifests = sorted((DEPLOY / "k8s").glob("*.yaml"))
    compose = DEPLOY / "compose" / "docker-compose.yml"
    unit = DEPLOY / "systemd" / "strata.service"
    if not manifests:
        fail("no Kubernetes manifests")
    check_kubernetes(manifests)
    check_compose(compose)
    check_unit(unit, strata)
    observability = DEPLOY / "observability"
    check_alerts(observability / "alerts.yml", observability / "alerts.test.yml")
    check_yaml([*manifests, compose, *sorted(observability.glob("*.yml"))])
    known = serve_env_vars(strata)
    base = image_env(DEPLOY / "docker" / "Dockerfile")
    print_config(strata, "the image's environment", base, [], known)
    check_compose_config(compose, strata, base, known)
    check_kubernetes_config(DEPLOY / "k8s" / "statefulset.yaml", strata, known)
    check_unit_config(unit, DEPLOY / "systemd" / "strata.toml", strata, known)
    if failures:
        print(f"{len(failures)} check(s) failed", file=sys.stderr)
        return 1
    print("deploy/: every check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
