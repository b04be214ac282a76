#!/usr/bin/env bash
# What the test suite needs besides the services, for Python scripts the tests run:
#   pika              the example of publishing directly over AMQP;
#   standardwebhooks  the reference Standard Webhooks library that verifies delivery signatures.
# Debian's package where there is one and Debian's python3 is the one on PATH, pip otherwise.
# And schemathesis, which deploy/local/schemathesis.sh runs against the OpenAPI documents, in a
# virtual environment of its own under target/tools: pinned, so that the generated cases and the
# checks are the same on every machine, and apart from the system's Python packages.
# And, in another such environment (target/tools/kubernetes), the pinned tools that
# deploy/kubernetes/validate.sh renders and validates the Kubernetes manifests with
# (deploy/kubernetes/requirements.txt: kubectl with its kustomize, the Kubernetes and KEDA
# schemas).
set -euo pipefail

cd "$(dirname "$0")/../.."

SCHEMATHESIS_VERSION=4.32.5
SCHEMATHESIS_VENV=target/tools/schemathesis
KUBERNETES_VENV=target/tools/kubernetes
KUBERNETES_REQUIREMENTS=deploy/kubernetes/requirements.txt
PROMETHEUS_VERSION=2.42.0
PROMETHEUS_DIR=target/tools/prometheus
PROMTOOL=$PROMETHEUS_DIR/usr/bin/promtool

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  as_root apt-get install -y -qq "$@" >/dev/null || { as_root apt-get update -qq && as_root apt-get install -y -qq "$@" >/dev/null; }
}

# A fresh virtual environment at $1 (Debian ships venv's pip bootstrap separately: python3-venv).
new_venv() {
  rm -rf "$1"
  mkdir -p "$(dirname "$1")"
  if ! python3 -m venv "$1" >/dev/null 2>&1; then
    rm -rf "$1"
    apt_install python3-venv
    python3 -m venv "$1"
  fi
}

pip_install() {
  if ! python3 -m pip --version >/dev/null 2>&1; then
    echo "==> installing pip for $(command -v python3)"
    apt_install python3-pip
  fi
  # Debian's python3 refuses system-wide pip installs unless told otherwise (PEP 668).
  python3 -m pip install --quiet "$@" 2>/dev/null || python3 -m pip install --quiet --break-system-packages "$@"
}

# The outage tests (crates/dispatcher/tests/outages/) run PostgreSQL and RabbitMQ servers of their
# own: PostgreSQL's initdb and pg_ctl, RabbitMQ's rabbitmq-server script, and, since PostgreSQL
# refuses to run as root, the postgres user they run it as (runuser switches to it).
if ! [ -x "$(pg_config --bindir 2>/dev/null)/initdb" ] && ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
  echo "==> installing the PostgreSQL server programs from Debian's packages"
  DEBIAN_FRONTEND=noninteractive apt_install postgresql
fi
if ! [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
  echo "==> installing RabbitMQ from Debian's packages"
  DEBIAN_FRONTEND=noninteractive apt_install rabbitmq-server
fi
if [ "$(id -u)" -eq 0 ] && ! id -u postgres >/dev/null 2>&1; then
  echo "==> creating the postgres user"
  useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/sh postgres
fi
command -v runuser >/dev/null || apt_install util-linux

# A Python module for the python3 on PATH: from Debian's package where that python3 is
# Debian's, with pip otherwise (the pip requirement is the third argument).
python_module() {
  local module=$1 debian=$2 requirement=$3
  python3 -c "import $module" 2>/dev/null && return
  if [ -n "$debian" ] && [ "$(command -v python3)" = /usr/bin/python3 ]; then
    echo "==> installing $debian from Debian's packages"
    apt_install "$debian"
  else
    echo "==> installing $requirement for $(command -v python3)"
    pip_install "$requirement"
  fi
}

python_module pika python3-pika pika
python_module standardwebhooks '' 'standardwebhooks>=1.0,<2'
python_module yaml python3-yaml 'PyYAML>=6,<7'

python3 -c 'import pika, standardwebhooks, yaml'

# The Debian revision of prometheus $PROMETHEUS_VERSION the configured archives hold.
prometheus_revision() {
  apt-cache madison prometheus 2>/dev/null \
    | awk -F'|' -v v="$PROMETHEUS_VERSION" '{ gsub(/ /, "", $2) } index($2, v "+") == 1 { print $2; exit }'
}
# Another Debian release carries another version: then its own is used (the rules and their
# tests use nothing newer than 2.42), recorded in $PROMETHEUS_DIR/fallback-version.
if ! "$PROMTOOL" --version 2>/dev/null | grep -qF "version $PROMETHEUS_VERSION+" \
  && ! { [ -f "$PROMETHEUS_DIR/fallback-version" ] && [ -x "$PROMTOOL" ]; }; then
  echo "==> unpacking promtool from Debian's prometheus package ($PROMETHEUS_VERSION where the apt sources have it) into $PROMETHEUS_DIR"
  revision=$(prometheus_revision)
  if [ -z "$revision" ]; then
    as_root apt-get update -qq
    revision=$(prometheus_revision)
  fi
  fallback=
  if [ -z "$revision" ]; then
    revision=$(LC_ALL=C apt-cache policy prometheus 2>/dev/null | awk '/Candidate:/ { print $2; exit }')
    if [ -z "$revision" ] || [ "$revision" = "(none)" ]; then
      echo "error: no prometheus package in the apt sources, so no promtool to check deploy/observability with" >&2
      exit 1
    fi
    echo "warning: prometheus $PROMETHEUS_VERSION is not in the apt sources; using promtool from prometheus $revision" >&2
    fallback=$revision
  fi
  download=$(mktemp -d)
  # apt-get download runs as the _apt user where it can, which must be able to write there.
  chmod 0777 "$download"
  (cd "$download" && apt-get download -qq "prometheus=$revision")
  rm -rf "$PROMETHEUS_DIR"
  mkdir -p "$PROMETHEUS_DIR"
  dpkg-deb -x "$download"/prometheus_*.deb "$PROMETHEUS_DIR"
  rm -rf "$download"
  # Only promtool is needed: the server and the package's other files go.
  find "$PROMETHEUS_DIR" -type f ! -path "$PROMTOOL" -delete
  if [ -n "$fallback" ]; then echo "$fallback" > "$PROMETHEUS_DIR/fallback-version"; fi
fi
"$PROMTOOL" --version >/dev/null

if ! "$SCHEMATHESIS_VENV/bin/schemathesis" --version 2>/dev/null | grep -qF "$SCHEMATHESIS_VERSION"; then
  if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "error: schemathesis $SCHEMATHESIS_VERSION needs Python 3.11 or newer (Debian 12 or later); $(command -v python3) is $(python3 -V 2>&1)" >&2
    exit 1
  fi
  echo "==> installing schemathesis $SCHEMATHESIS_VERSION into $SCHEMATHESIS_VENV"
  new_venv "$SCHEMATHESIS_VENV"
  "$SCHEMATHESIS_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
"$SCHEMATHESIS_VENV/bin/schemathesis" --version | grep -qF "$SCHEMATHESIS_VERSION"

# Installed again whenever the pinned list changes (a copy of it is kept in the environment).
if ! [ -x "$KUBERNETES_VENV/bin/kubectl" ] || ! cmp -s "$KUBERNETES_REQUIREMENTS" "$KUBERNETES_VENV/requirements.txt"; then
  echo "==> installing the Kubernetes manifest tools ($KUBERNETES_REQUIREMENTS) into $KUBERNETES_VENV"
  new_venv "$KUBERNETES_VENV"
  "$KUBERNETES_VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$KUBERNETES_REQUIREMENTS"
  cp "$KUBERNETES_REQUIREMENTS" "$KUBERNETES_VENV/requirements.txt"
fi
kubectl_version=$("$KUBERNETES_VENV/bin/kubectl" version --client 2>&1) || true
case "$kubectl_version" in
  *"Client Version: v1.37."*) ;;
  *) echo "error: $KUBERNETES_VENV/bin/kubectl is not kubectl 1.37: $kubectl_version" >&2; exit 1 ;;
esac
