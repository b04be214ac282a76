#!/usr/bin/env bash
# What the test suite needs besides the services: pika, for the Python example of publishing
# directly over AMQP. Debian's package for Debian's python3, pip for any other python3.
set -euo pipefail
if python3 -c 'import pika' 2>/dev/null; then exit 0; fi
if [ "$(command -v python3)" = /usr/bin/python3 ]; then
  echo "==> installing python3-pika from Debian's packages"
  if [ "$(id -u)" -eq 0 ]; then apt-get install -y -qq python3-pika >/dev/null || { apt-get update -qq && apt-get install -y -qq python3-pika >/dev/null; }
  else sudo apt-get install -y -qq python3-pika >/dev/null || { sudo apt-get update -qq && sudo apt-get install -y -qq python3-pika >/dev/null; }
  fi
else
  echo "==> installing pika for $(command -v python3)"
  python3 -m pip install --quiet pika
fi
python3 -c 'import pika'
