#!/usr/bin/env bash
# Install the localhost SLURM cluster (slurm/localhost/cluster.py) explicitly, so that a broken
# install fails CI here instead of skipping the `slurm` tests; run as root. With CI=true the
# tests' fixture then treats a missing cluster as an error, not a skip.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
python3 slurm/localhost/cluster.py install
python3 slurm/localhost/cluster.py check
echo "slurm_install: $((SECONDS - started)) s"
