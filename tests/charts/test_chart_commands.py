"""The chart runs commands the real CLI accepts, with the ports and queues the services register.

Each rendered container command is parsed by the `crossadapt` CLI's own click commands (services.cli,
operators.cli) without running it: an unknown command, option or service fails here, not in a pod.
"""

from __future__ import annotations

import pytest
import typer

from chart_harness import Render, containers, env_of, full_name, pod_template, render, workloads


@pytest.fixture(scope="module")
def cli() -> typer.Typer:
    import operators.cli
    import services.cli

    root = typer.Typer()
    services.cli.register(root)
    operators.cli.register(root)
    return typer.main.get_command(root)


def parse(cli, argv: list[str]) -> tuple[str, dict]:  # noqa: ANN001 - a click group
    """Resolve argv down to its command and parse its options (what `crossadapt ...` would run)."""
    ctx = cli.make_context("crossadapt", list(argv))
    command = cli
    while hasattr(command, "resolve_command"):
        rest = [*getattr(ctx, "_protected_args", getattr(ctx, "protected_args", [])), *ctx.args]
        name, command, rest = command.resolve_command(ctx, rest)
        ctx = command.make_context(name, rest, parent=ctx)
    return ctx.command_path, ctx.params


def _argv(container: dict) -> list[str]:
    command = [*container.get("command", []), *container.get("args", [])]
    assert command[0] == "crossadapt", command
    return command[1:]


def test_the_parser_rejects_what_the_cli_would(cli) -> None:  # noqa: ANN001
    with pytest.raises(Exception, match="No such option"):
        parse(cli, ["operator", "run", "--namespaces=ml"])
    with pytest.raises(Exception, match="No such command"):
        parse(cli, ["serve", "predictr"])


@pytest.mark.parametrize("values", [{}, {"operator.clusterWide": True, "operator.peering.enabled": True,
                                         "operator.replicas": 2, "predictor.kserve.enabled": True}])
def test_every_crossadapt_container_runs_a_valid_command(cli, values: dict) -> None:  # noqa: ANN001
    r = render(values=values)
    seen = set()
    for workload in workloads(r):
        for container in containers(pod_template(workload)):
            if not container["image"].startswith("crossadapt/"):
                continue
            path, params = parse(cli, _argv(container))
            seen.add(path)
            probe = container.get("livenessProbe", {}).get("exec", {}).get("command")
            if probe:
                parse(cli, probe[1:])
                seen.add("probe " + " ".join(probe))
    assert {"crossadapt worker", "crossadapt operator run", "crossadapt serve predictor",
            "crossadapt serve sampler", "probe crossadapt worker-health"} <= seen


def test_ports_and_queues_are_the_registered_ones(default_render: Render) -> None:
    from services.common.registry import service_specs

    specs = service_specs()
    assert set(specs) >= {"projector", "sampler", "offline-distiller", "online-codistiller", "drift-detector",
                          "predictor"}
    for name, spec in specs.items():
        if name == "predictor":
            env = env_of(pod_template(default_render.get("Deployment", full_name(name)))["containers"][0])
            assert env["CROSSADAPT_GRPC_PORT"]["value"] == str(spec.default_port)
            assert env["CROSSADAPT_PREDICTOR_HTTP_PORT"]["value"] == str(spec.extra_ports["http"])
            assert env["CROSSADAPT_PREDICTOR_INFERENCE_GRPC_PORT"]["value"] == str(spec.extra_ports["grpc"])
            continue
        container = pod_template(default_render.get("Deployment", full_name(name)))["containers"][0]
        assert env_of(container)["CROSSADAPT_GRPC_PORT"]["value"] == str(spec.default_port), name
        worker = pod_template(default_render.get("Deployment", full_name(f"{name}-worker")))["containers"][0]
        assert worker["command"][3] == spec.queue, name
