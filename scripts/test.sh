#!/usr/bin/env bash
# Run the test suite: unit, core (in-memory store), Hypothesis model, and real
# FUSE mounts against a local moto S3 server. Extra arguments go to pytest,
# e.g. `./scripts/test.sh -m slow` for the heavyweight tier.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
