"""The offline-distiller service: progressive distillation of a projected student as one resumable task."""
