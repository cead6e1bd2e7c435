"""The projector service: embedding-table projection as a Celery map-reduce behind a gRPC API.

`layout` (sharded table checkpoints), `pipeline` (the steps, Celery-free), `tasks` (Celery tasks
and the chord), `server` (gRPC `ProjectorService`).
"""
