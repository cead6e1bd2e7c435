"""Suite-wide set-up. Runs before any test module imports torch."""

import os

# Same reason as in crossadapt/__init__.py: spinning OpenMP threads starve everything else on 2 cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
