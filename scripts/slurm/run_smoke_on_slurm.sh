#!/usr/bin/env bash
# The whole smoke study (config/smoke.yaml, up to report/report.html) through a throwaway one-node
# Slurm on this machine, with `--profile profiles/slurm`, checked job by job against sacct.
#
#   sudo scripts/slurm/run_smoke_on_slurm.sh [PYTEST_ARGS...]     (PYTHON=... to pick the venv)
#
# It is tests/test_slurm.py's workflow test with its full target: about 7 minutes on 2 CPUs, too
# long for the test suite, which runs one gather rule and its training jobs instead. The test
# starts and stops the cluster (scripts/slurm/start_cluster.sh, stop_cluster.sh), prints the sacct
# listing and the wall time, and leaves the study's copy and logs under pytest's tmp folder.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
python=${PYTHON:-$repo/.venv/bin/python}

cd "$repo"
ADALOSS_SLURM_SMOKE=full exec "$python" -m pytest tests/test_slurm.py -k smoke_study -v -p no:cacheprovider "$@"
