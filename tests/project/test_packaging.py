"""The image Kubeflow runs is built the same way as the environment the tests run in."""

import re
from pathlib import Path

from tests.conftest import REPO



def dockerfile_instructions():
    text = (REPO / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_the_image_uses_the_shared_install_scripts_on_the_same_debian():
    instructions = dockerfile_instructions()
    # Every stage starts from that base, or from the stage that installed on it.
    assert all(i.startswith(("FROM debian:trixie-slim AS build", "FROM build")) for i in instructions
               if i.startswith("FROM ")), [i for i in instructions if i.startswith("FROM ")]
    assert instructions[0].startswith("FROM debian:trixie-slim")
    launcher = (REPO / "bin" / "thaw-env").read_text()
    assert "debootstrap --variant=minbase trixie" in launcher
    run = " ".join(i for i in instructions if i.startswith("RUN "))
    for script in ("install-system-packages.sh", "install-python-deps.sh"):
        assert f"/opt/thaw/src/scripts/{script}" in run
        assert script in launcher
    assert "install-python-deps.sh /opt/thaw/venv /usr/bin/python3 --no-dev" in run  # no test tools in the image


def test_the_image_runs_as_non_root_with_the_code_installed():
    instructions = dockerfile_instructions()
    users = [i for i in instructions if i.startswith("USER ")]
    assert users and users[-1] not in ("USER root", "USER 0")
    copies = " ".join(i for i in instructions if i.startswith("COPY "))
    for package in ("pipeline/", "components/", "demo/", "thaw/", "system/", "schemas/"):
        assert package in copies
    assert not [i for i in instructions if i.startswith("VOLUME")]


def test_every_dependency_is_pinned_by_the_lock():
    lock = {line.split("==")[0].lower().replace("_", "-")
            for line in (REPO / "requirements.lock").read_text().splitlines()
            if line and not line.startswith("#")}
    for name in ("requirements.in", "requirements-dev.in"):
        for line in (REPO / name).read_text().splitlines():
            requirement = re.split(r"[=<>\[ ]", line.strip())[0].lower().replace("_", "-")
            if requirement and not requirement.startswith("#"):
                assert requirement in lock, f"{name}: {requirement} is not in requirements.lock (run make lock)"
