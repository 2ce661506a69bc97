"""The Dockerfiles parse (dockerfile-parse) and say what the images promise. No Docker engine
runs here, so the images themselves are built by `make build` / `make build-dev` elsewhere."""

from __future__ import annotations

from pathlib import Path

from dockerfile_parse import DockerfileParser

REPO = Path(__file__).resolve().parents[2]


def parse(name: str) -> list[dict]:
    parser = DockerfileParser(fileobj=open(REPO / "docker" / name, "rb"))  # noqa: SIM115
    return parser.structure


def stages(structure: list[dict]) -> list[list[dict]]:
    result: list[list[dict]] = []
    for instruction in structure:
        if instruction["instruction"] == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def values(instructions: list[dict], kind: str) -> list[str]:
    return [i["value"] for i in instructions if i["instruction"] == kind]


def test_runtime_image_is_multi_stage_and_non_root():
    parts = stages(parse("Dockerfile"))
    assert len(parts) >= 2
    final = parts[-1]
    users = values(final, "USER")
    assert users, "the final stage must set USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert values(final, "COPY") and all("--from=" in c for c in values(final, "COPY"))
    assert any("flexrl" in e for e in values(final, "ENTRYPOINT"))


def test_runtime_torch_is_chosen_by_a_build_arg():
    structure = parse("Dockerfile")
    assert any(v.startswith("TORCH") for v in values(structure, "ARG"))
    runs = " ".join(values(structure, "RUN"))
    assert "download.pytorch.org/whl/${TORCH}" in runs and "constraints.txt" in runs


def test_dev_image_has_dev_deps_and_headless_rendering():
    structure = parse("Dockerfile.dev")
    runs = " ".join(values(structure, "RUN"))
    assert ".[dev" in runs and "-e " in runs  # editable: the live-mounted source is what runs
    for lib in ("libegl1", "libosmesa6"):
        assert lib in runs
    env = " ".join(values(structure, "ENV"))
    assert "MUJOCO_GL=egl" in env


def test_dockerignore_keeps_the_context_small():
    ignored = (REPO / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", "workspace"):
        assert entry in ignored
