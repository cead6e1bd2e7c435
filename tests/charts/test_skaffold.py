"""skaffold.yaml: valid for its apiVersion's published schema, builds every image from a Dockerfile that
exists, and hands every built image to the chart (skaffold cannot run here: no Docker, no cluster).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from chart_harness import CHART, ROOT, containers, pod_template, render, workloads

SKAFFOLD = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
SCHEMAS = Path(__file__).parent / "schemas"
SERVICE_PACKAGES = {"projector": "projector", "sampler": "sampler", "offline-distiller": "offline_distiller",
                    "online-codistiller": "online_codistiller", "drift-detector": "drift_detector",
                    "predictor": "predictor"}
EXPECTED_ARTIFACTS = {f"crossadapt/{name}": f"services/{package}/Dockerfile"
                      for name, package in SERVICE_PACKAGES.items()} | {"crossadapt/operator": "operators/Dockerfile"}
# The chart values each image goes to.
IMAGE_VALUES = {f"crossadapt/{name}": f"services.{name}.image" for name in SERVICE_PACKAGES if name != "predictor"} | {
    "crossadapt/predictor": "predictor.image", "crossadapt/operator": "operator.image"}


def _artifacts() -> dict[str, dict]:
    return {a["image"]: a for a in SKAFFOLD["build"]["artifacts"]}


def _release() -> dict:
    releases = SKAFFOLD["deploy"]["helm"]["releases"]
    assert len(releases) == 1
    return releases[0]


def _sanitized(image: str) -> str:
    """Skaffold's template name part for an image: every non-alphanumeric character becomes '_'."""
    return re.sub(r"[^A-Za-z0-9]", "_", image)


def test_skaffold_yaml_matches_the_published_schema_of_its_api_version() -> None:
    version = SKAFFOLD["apiVersion"].split("/", 1)[1]
    schema_file = SCHEMAS / f"skaffold-{version}.json"
    assert schema_file.is_file(), f"vendor skaffold's schema for {SKAFFOLD['apiVersion']} (see schemas/README.md)"
    schema = json.loads(schema_file.read_text())
    errors = sorted(e.message for e in jsonschema.Draft7Validator(schema).iter_errors(SKAFFOLD))
    assert errors == []
    assert SKAFFOLD["kind"] == "Config"


def test_the_schema_check_can_fail() -> None:
    schema = json.loads((SCHEMAS / "skaffold-v4beta11.json").read_text())
    broken = json.loads(json.dumps(SKAFFOLD))
    broken["deploy"]["helm"]["releases"][0]["chartPth"] = "charts/crossadapt"
    assert list(jsonschema.Draft7Validator(schema).iter_errors(broken))


def test_every_image_is_built_from_the_repository_root() -> None:
    artifacts = _artifacts()
    assert {image: a["docker"]["dockerfile"] for image, a in artifacts.items()} == EXPECTED_ARTIFACTS
    for image, artifact in artifacts.items():
        assert artifact.get("context", ".") == ".", image


def test_every_artifacts_dockerfile_exists() -> None:
    """Strict on purpose: a Dockerfile still being written fails here until it lands."""
    missing = sorted(path for path in EXPECTED_ARTIFACTS.values() if not (ROOT / path).is_file())
    assert missing == []


def test_every_built_image_is_set_in_the_chart() -> None:
    templates = _release()["setValueTemplates"]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for image, key in IMAGE_VALUES.items():
        name = _sanitized(image)
        assert templates[f"{key}.repository"] == f"{{{{.IMAGE_REPO_{name}}}}}", image
        assert templates[f"{key}.tag"] == f"{{{{.IMAGE_TAG_{name}}}}}", image
        node = values
        for part in key.split("."):
            node = node[part]
        assert node["repository"] == image, f"{key}.repository defaults to another image"
    assert set(IMAGE_VALUES) == set(_artifacts())
    assert _release()["chartPath"] == "charts/crossadapt"


def _skaffold_values(profile: str | None) -> tuple[tuple[str, ...], dict[str, str]]:
    """What `skaffold deploy` would pass helm: the profile's values files and the image templates filled in."""
    release = json.loads(json.dumps(_release()))
    files = list(release.get("valuesFiles", []))
    for p in SKAFFOLD.get("profiles", []):
        if p["name"] != profile:
            continue
        for patch in p.get("patches", []):
            if patch["path"] == "/deploy/helm/releases/0/valuesFiles/-":
                assert patch["op"] == "add"
                files.append(patch["value"])
    filled = {}
    for key, template in release["setValueTemplates"].items():
        match = re.fullmatch(r"\{\{\.IMAGE_(REPO|TAG)_(\w+)\}\}", template)
        assert match, template
        filled[key] = f"registry.test/{match.group(2)}" if match.group(1) == "REPO" else "dev-1234"
    return tuple(str(Path(f).relative_to("charts/crossadapt")) for f in files), filled


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_a_profile_deploys_exactly_the_built_images(profile: str) -> None:
    files, filled = _skaffold_values(profile)
    assert files == {"cpu": ("values-cpu-only.yaml",), "gpu": ("values-gpu.yaml",)}[profile]
    r = render(files, values=filled)
    used = {c["image"] for w in workloads(r) for c in containers(pod_template(w))
            if c["image"].startswith("registry.test/")}
    built = {f"registry.test/{_sanitized(image)}:dev-1234" for image in _artifacts()}
    assert used == built


def test_profiles() -> None:
    profiles = {p["name"]: p for p in SKAFFOLD["profiles"]}
    assert set(profiles) == {"cpu", "gpu"}
    cpu_patches = {(p["path"], json.dumps(p["value"])) for p in profiles["cpu"]["patches"]}
    assert ("/build/local/push", "false") in cpu_patches  # kind / minikube load local images
    assert {"kubeContext": "minikube"} in profiles["cpu"]["activation"]
    gpu_patches = {(p["path"], json.dumps(p["value"])) for p in profiles["gpu"]["patches"]}
    assert ("/build/local/push", "true") in gpu_patches  # a remote cluster pulls from --default-repo


def test_gpu_profile_builds_the_trainers_with_cuda_torch() -> None:
    """Trainers run on GPUs with the gpu profile: their images take CUDA torch through TORCH_INDEX_URL."""
    gpu = next(p for p in SKAFFOLD["profiles"] if p["name"] == "gpu")
    artifacts = SKAFFOLD["build"]["artifacts"]
    patched = {}
    for patch in gpu["patches"]:
        match = re.fullmatch(r"/build/artifacts/(\d+)/docker/buildArgs", patch["path"])
        if match:
            patched[artifacts[int(match.group(1))]["image"]] = patch["value"]
    assert set(patched) == {"crossadapt/offline-distiller", "crossadapt/online-codistiller"}
    for image, build_args in patched.items():
        assert build_args["TORCH_INDEX_URL"].startswith("https://download.pytorch.org/whl/cu"), image
        dockerfile = (ROOT / EXPECTED_ARTIFACTS[image]).read_text()
        assert re.search(r"^ARG TORCH_INDEX_URL", dockerfile, re.MULTILINE), f"{image}: no TORCH_INDEX_URL build arg"
