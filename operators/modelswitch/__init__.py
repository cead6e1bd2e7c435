"""`ModelSwitch` (crossadapt.io/v1alpha1): switch a serving CTR model to a new architecture and roll it out.

Layout, from pure to wired:

* `crd` — names of the resource, its annotation, finalizer and phases;
* `models` — the spec and status as pydantic models (what the CRD's schema admits);
* `decisions` — the gate verdict over paired teacher-vs-student metrics and the traffic ladder (pure);
* `builders` — requests to the services, request ids, names, conditions and history (pure);
* `clients` — the service and predictor APIs as Protocols, with the gRPC implementation;
* `transitions` — one small function per phase: observe, call a service, move on;
* `reconcile` — one pass over a switch: actions, pause, then the phase's transition;
* `handlers` — the kopf wiring (a timer per switch, a deletion handler, an index of predictor owners);
* `settings` — `CROSSADAPT_OPERATOR_*` settings.
"""
