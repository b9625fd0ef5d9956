#!/usr/bin/env bash
# Regenerates docs/prefect-pipeline-run.png: a pipeline flow run in the Prefect UI, taken by headless
# Chromium (Debian: apt-get install -y chromium). Start a server first (make prefect-server), run
#   PREFECT_API_URL=http://127.0.0.1:4200/api python flows/pipeline.py
# and pass the run's page, printed by the flow as "View at ...". (On a port other than 4200, start the
# server with PREFECT_UI_API_URL=http://127.0.0.1:PORT/api, or the UI looks for the API on 4200.)
set -euo pipefail
url=${1:?usage: docs/screenshot.sh http://127.0.0.1:4200/runs/flow-run/RUN_ID}
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
chromium --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
  --disable-sync --no-first-run --user-data-dir="$profile" --hide-scrollbars --window-size=1600,1100 \
  --virtual-time-budget=30000 --screenshot="$(dirname "$0")/prefect-pipeline-run.png" "$url"
