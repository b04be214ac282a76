#!/usr/bin/env bash
# Renders the base and every overlay with kustomize and validates the result offline: the
# Kubernetes schemas (strict), KEDA's CRD schema, and the cross-object checks of validate.py.
# `make test` runs it; the tools (requirements.txt) are installed by
# deploy/local/ensure-test-tools.sh into target/tools/kubernetes.
set -euo pipefail

cd "$(dirname "$0")/../.."

VENV=target/tools/kubernetes
if ! [ -x "$VENV/bin/kubectl" ] || ! [ -x "$VENV/bin/python" ]; then
  echo "error: $VENV is missing; run deploy/local/ensure-test-tools.sh" >&2
  exit 1
fi
exec "$VENV/bin/python" deploy/kubernetes/validate.py
