#!/usr/bin/env bash
# Checks deploy/observability/ in seconds, without a Prometheus or Grafana running: the alert
# rules parse and their unit tests pass (promtool), and validate.py checks the dashboard's
# queries, the metric names both use against the Rust sources, and the runbook links.
# promtool comes from Debian's prometheus package, unpacked by deploy/local/ensure-test-tools.sh.
set -euo pipefail

cd "$(dirname "$0")/../.."

# PROMTOOL overrides the promtool used: an absolute path, or one relative to the repository root.
PROMTOOL=${PROMTOOL:-target/tools/prometheus/usr/bin/promtool}
# Absolute, so that it still names the same file once the tests below change directory.
case $PROMTOOL in
  /*) ;;
  *) PROMTOOL=$PWD/$PROMTOOL ;;
esac
if ! [ -x "$PROMTOOL" ]; then
  echo "error: $PROMTOOL not found; run deploy/local/ensure-test-tools.sh" >&2
  exit 1
fi

echo "==> checking the Prometheus rules, the Grafana dashboard and the metric names they use"
"$PROMTOOL" check rules deploy/observability/prometheus/alerts.yaml
# Rule files named by a test file are found relative to it.
(cd deploy/observability/prometheus && "$PROMTOOL" test rules alerts.test.yaml)
python3 deploy/observability/validate.py "$PROMTOOL"
