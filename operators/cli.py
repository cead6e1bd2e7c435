"""`crossadapt operator ...`: run the ModelSwitch operator (plugged into the core CLI by entry point).

    crossadapt operator run -n ml                     # watch one namespace (repeat -n for more)
    crossadapt operator run -A --liveness http://0.0.0.0:8080/healthz
    crossadapt operator run -A --peering crossadapt   # several replicas, one active (kopf peering)

Only typer is imported at module level: `crossadapt --help` must not load kopf, gRPC or Celery.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

app = typer.Typer(help="The ModelSwitch operator (kopf): switches and gated rollouts driven by kubectl.",
                  no_args_is_help=True, add_completion=False)


@app.callback()
def operator() -> None:
    """The ModelSwitch operator (kopf): switches and gated rollouts driven by kubectl."""


@app.command("run")
def run(
    namespace: Annotated[Optional[list[str]], typer.Option(
        "--namespace", "-n", help="Namespace to watch (repeatable).")] = None,
    all_namespaces: Annotated[bool, typer.Option(
        "--all-namespaces", "-A", help="Watch every namespace (needs the ClusterRole).")] = False,
    peering: Annotated[Optional[str], typer.Option(
        help="Join this kopf peering (several replicas, one active); default: standalone.")] = None,
    priority: Annotated[int, typer.Option(help="Peering priority: the highest active replica wins.")] = 0,
    liveness: Annotated[Optional[str], typer.Option(
        help="Liveness endpoint, e.g. http://0.0.0.0:8080/healthz (empty: none).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Reconcile ModelSwitch resources until SIGTERM (service addresses from CROSSADAPT_OPERATOR_*)."""
    if bool(namespace) == all_namespaces:
        raise typer.BadParameter("give either --namespace/-n (one or more) or --all-namespaces/-A",
                                 param_hint="--namespace")
    import logging

    import kopf

    from operators.modelswitch.handlers import register_handlers
    from operators.modelswitch.settings import OperatorSettings

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = OperatorSettings()
    # The default registry carries kopf's fallback logins (in-cluster service account, kubeconfig).
    registry = kopf.get_default_registry()
    register_handlers(registry, settings)
    kopf.run(registry=registry, standalone=peering is None, peering_name=peering, priority=priority,
             namespaces=namespace or (), clusterwide=all_namespaces, liveness_endpoint=liveness or None)


def register(root: typer.Typer) -> None:
    """Mount `crossadapt operator ...` on the root CLI."""
    root.add_typer(app, name="operator")
