"""CrossAdapt core library: data, CTR models, metrics, training and the transfer engine.

This package knows nothing of gRPC, Celery, S3 or Kubernetes; the platform adapters live in
``services/`` and ``operators/``.
"""

import os as _os

# libgomp's default spin-waiting makes idle OpenMP threads burn the cores other work needs: on a shared
# 2-vCPU machine a FiBiNET step took 1098 ms instead of 128 ms and 2-thread training ran at half the
# 1-thread rate. It only takes effect if set before torch is first imported; a user's own value wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
