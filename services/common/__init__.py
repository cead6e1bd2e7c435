"""Shared platform plumbing: settings, storage, operations, Celery app, gRPC helpers."""
