"""The online co-distiller service: asymmetric co-distillation over a stream, resumable at its position."""
