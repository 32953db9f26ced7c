"""The Dockerfile, its build context and the wheel it installs, checked without a Docker engine."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from email.parser import Parser
from pathlib import Path

import deployfiles
import pytest
from conftest import IN_CI, ROOT, Exporter, Process, free_port, http_get, listening_port, wait_for

from ft_exporter import __version__
from ft_exporter.config import DEFAULT_PORT

#: What a `docker build --build-arg REVISION=...` would pass: a commit hash.
REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.e2e
def test_hadolint_finds_nothing_at_warning_level() -> None:
    result = deployfiles.run(
        [deployfiles.tool("hadolint"), "--failure-threshold", "warning", "Dockerfile"], cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.e2e
def test_hadolint_would_catch_a_bad_dockerfile(tmp_path: Path) -> None:
    # The check above is only worth something if hadolint fails on what it should.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nUSER root\n")
    result = deployfiles.run(
        [deployfiles.tool("hadolint"), "--failure-threshold", "warning", str(bad)]
    )
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # "latest" tag


def test_one_pinned_slim_base_for_every_stage() -> None:
    df = deployfiles.parse_dockerfile()
    image = df.global_args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-[a-z]+", image), image
    assert len(df.stages) == 2
    assert [s.base for s in df.stages] == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]
    assert df.stages[0].name == "build"
    python_minor = tuple(int(x) for x in image.split(":")[1].split(".")[:2])
    floor = deployfiles.pyproject()["project"]["requires-python"].removeprefix(">=")
    assert python_minor >= tuple(int(x) for x in floor.split("."))


def test_final_stage_only_copies_the_built_virtualenv() -> None:
    # No RUN or ADD in the final stage means nothing is installed or downloaded there: no
    # compilers, no pip cache, no wheels. It takes the virtualenv from the build stage.
    final = deployfiles.parse_dockerfile().final
    assert {i.cmd for i in final.instructions} <= {
        "ARG",
        "LABEL",
        "COPY",
        "ENV",
        "USER",
        "EXPOSE",
        "HEALTHCHECK",
        "ENTRYPOINT",
        "CMD",
    }
    copies = final.all("COPY")
    assert [(c.flags, c.value) for c in copies] == [
        (("--from=build",), ("/opt/ft-exporter", "/opt/ft-exporter"))
    ]
    env = {k: v for ins in final.all("ENV") for k, v in deployfiles.pairs(ins).items()}
    assert env["PATH"].startswith("/opt/ft-exporter/bin:")
    build = deployfiles.parse_dockerfile().stage("build")
    run_lines = " ".join(" ".join(i.value) for i in build.all("RUN"))
    assert "--no-cache-dir" in run_lines
    assert "venv --without-pip /opt/ft-exporter" in run_lines


def test_copy_sources_exist_and_are_in_the_build_context() -> None:
    build = deployfiles.parse_dockerfile().stage("build")
    sources = [src for ins in build.all("COPY") for src in ins.value[:-1]]
    assert sources, "the build stage copies nothing"
    for src in sources:
        path = ROOT / src
        assert path.exists(), f"COPY source {src} does not exist"
        files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
        sent = [p for p in files if deployfiles.in_build_context(p.relative_to(ROOT).as_posix())]
        assert sent, f"COPY source {src} is excluded by .dockerignore"
        for p in files:
            rel = p.relative_to(ROOT).as_posix()
            if p.suffix == ".py":
                assert deployfiles.in_build_context(rel), f"{rel} is excluded by .dockerignore"


def test_dockerignore_keeps_tests_caches_and_secrets_out() -> None:
    sent = deployfiles.build_context_files()
    assert "pyproject.toml" in sent
    assert "ft_exporter/cli.py" in sent
    for path in sent:
        top = path.split("/")[0]
        assert top in ("pyproject.toml", "setup.py", "README.md", "ft_exporter"), path
        assert "__pycache__" not in path, path
        assert not path.endswith((".pyc", ".pyo")), path
    # The matcher itself, on paths that may not exist in this checkout:
    for rel in (
        "tests/test_container.py",
        ".venv/bin/python",
        ".git/config",
        "ft_exporter/__pycache__/cli.cpython-311.pyc",
        "build/lib/ft_exporter/cli.py",
        "deploy/kubernetes/kustomization.yaml",
        ".env",
    ):
        assert not deployfiles.in_build_context(rel), rel
    assert deployfiles.in_build_context("ft_exporter/new_module.py")


def test_entrypoint_is_the_installed_console_script() -> None:
    final = deployfiles.parse_dockerfile().final
    (entrypoint,) = final.all("ENTRYPOINT")
    assert entrypoint.json, "use the exec form so that signals reach the exporter"
    assert list(entrypoint.value) == ["ft-exporter"]
    assert "ft-exporter" in deployfiles.pyproject()["project"]["scripts"]
    assert not final.all("CMD")


def test_exposes_the_default_port() -> None:
    (expose,) = deployfiles.parse_dockerfile().final.all("EXPOSE")
    ports = [p.removesuffix("/tcp") for p in expose.value]
    assert ports == [str(DEFAULT_PORT)], "run: python scripts/sync_deploy.py"


def test_runs_as_a_numeric_non_root_user() -> None:
    users = deployfiles.parse_dockerfile().final.all("USER")
    assert users, "no USER: the image would run as root"
    user = users[-1].value[0]
    assert re.fullmatch(r"\d+:\d+", user), f"USER {user} must be numeric uid:gid"
    assert all(int(x) != 0 for x in user.split(":"))


def test_oci_labels_name_version_licence_and_source() -> None:
    df = deployfiles.parse_dockerfile()
    assert df.global_args["VERSION"] == __version__, "run: python scripts/sync_deploy.py"
    labels: dict[str, str] = {}
    for ins in df.final.all("LABEL"):
        labels.update(deployfiles.pairs(ins))
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert deployfiles.pyproject()["project"]["license"] == "Apache-2.0"
    assert "org.opencontainers.image.source" in labels
    assert labels["org.opencontainers.image.title"] == "ft-exporter"
    # The build stage refuses to build when VERSION and the package version differ.
    build_runs = " ".join(" ".join(i.value) for i in df.stage("build").all("RUN"))
    assert 'test -f "/wheels/ft_exporter-${VERSION}-py3-none-any.whl"' in build_runs


def test_the_revision_build_argument_reaches_the_wheel_and_the_label() -> None:
    """``--build-arg REVISION=...``: stamped by setup.py in the build stage (its context has
    no .git), and the final image's org.opencontainers.image.revision."""
    df = deployfiles.parse_dockerfile()
    assert df.global_args["REVISION"] == ""
    for stage in df.stages:
        declared = [i.value[0] for i in stage.all("ARG")]
        assert "REVISION" in declared, f"stage {stage.name} does not declare ARG REVISION"
    build = df.stage("build")
    (wheel_run,) = [i for i in build.all("RUN") if "pip wheel" in " ".join(i.value)]
    assert " ".join(wheel_run.value).startswith('FT_EXPORTER_REVISION="${REVISION}" pip wheel')
    copied = {src for ins in build.all("COPY") for src in ins.value[:-1]}
    assert "setup.py" in copied, "the build hook that stamps the revision"
    labels: dict[str, str] = {}
    for ins in df.final.all("LABEL"):
        labels.update(deployfiles.pairs(ins))
    assert labels["org.opencontainers.image.revision"] == "${REVISION}"


def _healthcheck_argv() -> list[str]:
    (check,) = deployfiles.parse_dockerfile().final.all("HEALTHCHECK")
    assert check.json
    assert check.value[0] == "CMD"
    argv = list(check.value[1:])
    assert argv[0] == "python", "the image has python, and neither curl nor wget"
    return argv


def test_healthcheck_command_probes_a_running_exporter(
    exporter_factory: Callable[..., Exporter],
) -> None:
    argv = _healthcheck_argv()
    assert "/-/healthy" in argv[-1]
    command = [sys.executable, *argv[1:]]
    exporter = exporter_factory(["--demo"])
    ok = subprocess.run(
        command,
        env={"FT_EXPORTER_WEB_LISTEN_ADDRESS": f"127.0.0.1:{exporter.port}"},
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    # The same check against a port nobody listens on must fail.
    down = subprocess.run(
        command,
        env={"FT_EXPORTER_WEB_LISTEN_ADDRESS": f":{free_port()}"},
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert down.returncode != 0


@pytest.mark.e2e
def test_wheel_builds_installs_into_a_fresh_venv_and_runs(tmp_path: Path) -> None:
    """What the image's build stage does, step for step, outside Docker."""
    # 1. The build context: only what the Dockerfile copies, filtered by .dockerignore.
    context = tmp_path / "src"
    for rel in deployfiles.build_context_files():
        target = context / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    wheels = tmp_path / "wheels"
    # 2. pip wheel: the exporter's wheel and those of its dependencies.
    wheel_args = ["wheel", "--no-cache-dir", "--wheel-dir", str(wheels), "."]
    # As the Dockerfile passes --build-arg REVISION: the context has no .git to read.
    stamped = {**os.environ, "FT_EXPORTER_REVISION": REVISION}
    built = deployfiles.run([*pip, *wheel_args], timeout=240, cwd=context, env=stamped)
    assert built.returncode == 0, built.stderr
    wheel = wheels / f"ft_exporter-{__version__}-py3-none-any.whl"
    assert wheel.exists(), sorted(p.name for p in wheels.iterdir())
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        meta = Parser().parsestr(
            archive.read(f"ft_exporter-{__version__}.dist-info/METADATA").decode()
        )
        entry_points = archive.read(f"ft_exporter-{__version__}.dist-info/entry_points.txt")
    modules = {Path(n).name for n in names if n.startswith("ft_exporter/")}
    assert modules >= {p.name for p in (ROOT / "ft_exporter").glob("*.py")}
    assert not [n for n in names if n.startswith("tests/") or "__pycache__" in n]
    assert meta["Version"] == __version__
    assert meta["License-Expression"] == "Apache-2.0"
    assert b"ft-exporter = ft_exporter.cli:main" in entry_points
    # 3. A virtualenv without pip, filled from those wheels alone (no index).
    venv = tmp_path / "venv"
    made = deployfiles.run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    assert made.returncode == 0, made.stderr
    into = ["--python", str(venv / "bin" / "python")]
    offline = ["--no-cache-dir", "--no-index", "--find-links", str(wheels)]
    installed = deployfiles.run([*pip, *into, "install", *offline, f"ft-exporter=={__version__}"])
    assert installed.returncode == 0, installed.stderr
    exe = venv / "bin" / "ft-exporter"
    assert not (venv / "bin" / "pip").exists()
    # 4. The console script runs from there, not from this checkout.
    version = deployfiles.run([str(exe), "--version"], cwd=tmp_path)
    assert version.returncode == 0, version.stderr
    assert version.stdout.splitlines()[0] == (
        f"ft-exporter, version {__version__} (revision: {REVISION})"
    )
    helped = deployfiles.run([str(exe), "--help"], cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "--dashscope.api-key-file" in helped.stdout
    assert "DASHSCOPE_API_KEY" in helped.stdout
    where = deployfiles.run(
        [str(venv / "bin" / "python"), "-c", "import ft_exporter; print(ft_exporter.__file__)"],
        cwd=tmp_path,
    )
    assert where.stdout.strip().startswith(str(venv)), where.stdout
    # 5. And it serves: demo mode needs every module, the simulator included.
    proc = Process(
        [str(exe), "--demo", "--web.listen-address=127.0.0.1:0"],
        log_path=tmp_path / "exporter.log",
        cwd=tmp_path,
    )
    try:
        port = listening_port(proc, what="exporter")
        wait_for(lambda: http_get(f"http://127.0.0.1:{port}/-/ready")[0] == 200, what="ready")
        status, body = http_get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        assert b'dashscope_finetune_up{account="default"} 1.0' in body
        build_info = (
            f'dashscope_finetune_exporter_build_info{{revision="{REVISION}",'
            f'version="{__version__}"}} 1.0'
        )
        assert build_info.encode() in body
    finally:
        proc.stop()


@pytest.mark.e2e
def test_runs_as_the_image_user_on_a_read_only_root(tmp_path: Path) -> None:
    """``docker run IMAGE --demo`` with compose's read_only / Kubernetes'
    readOnlyRootFilesystem, emulated: the image's ENV and USER, the ENTRYPOINT found through
    that PATH, no capabilities, no new privileges, and every file system read-only."""
    unshare, setpriv = deployfiles.tool("unshare"), deployfiles.tool("setpriv")
    final = deployfiles.parse_dockerfile().final
    uid, gid = final.all("USER")[-1].value[0].split(":")
    (entrypoint,) = final.all("ENTRYPOINT")
    # This virtualenv stands in for the image's /opt/ft-exporter.
    env = {"HOME": "/"}
    for ins in final.all("ENV"):
        for key, raw in deployfiles.pairs(ins).items():
            value = raw.replace("/opt/ft-exporter", str(Path(sys.executable).parent.parent))
            env[key] = deployfiles.substitute(value, {"PATH": "/usr/local/bin:/usr/bin:/bin"})
    ids = [f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
    drop = [setpriv, *ids, "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
    probe = deployfiles.run([*drop, "python", "-c", "import ft_exporter"], env=env)
    if probe.returncode != 0:
        message = f"uid {uid} cannot read this checkout or its Python: {probe.stderr[-300:]}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    script = 'mount -o bind,remount,ro / && exec "$@"'
    argv = [unshare, "--mount", "/bin/sh", "-c", script, "sh", *drop, *entrypoint.value]
    proc = Process(
        [*argv, "--demo", "--web.listen-address=127.0.0.1:0"],
        env=env,
        log_path=tmp_path / "exporter.log",
        clean_env=True,
    )
    try:
        url = f"http://127.0.0.1:{listening_port(proc, what='exporter')}"
        wait_for(lambda: http_get(url + "/-/ready")[0] == 200, what=f"ready; {proc.output()}")
        status, body = http_get(url + "/metrics")
        assert status == 200
        assert b'dashscope_finetune_up{account="default"} 1.0' in body
        # unshare, sh and setpriv exec in turn: the process is the exporter itself.
        status_lines = Path(f"/proc/{proc.proc.pid}/status").read_text().splitlines()
        fields = dict(line.split(":", 1) for line in status_lines)
        assert fields["Uid"].split()[:2] == [uid, uid]
        assert fields["Gid"].split()[:2] == [gid, gid]
        assert int(fields["CapEff"], 16) == 0
        mounts = Path(f"/proc/{proc.proc.pid}/mounts").read_text().splitlines()
        root = next(m.split() for m in mounts if m.split()[1] == "/")
        assert "ro" in root[3].split(","), root
    finally:
        proc.stop()


@pytest.mark.parametrize("path", ["Dockerfile", ".dockerignore", "docker-compose.yml"])
def test_no_absolute_paths_of_a_machine(path: str) -> None:
    text = (ROOT / path).read_text(encoding="utf-8")
    assert not re.search(r"(?<![\w.])/(?:home|root|Users|work|tmp)/", text), path
