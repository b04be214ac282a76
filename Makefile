# Waybill: `make run` brings the system up, `make test` runs every test. Both set up what they
# need first (PostgreSQL and RabbitMQ on their default local ports, the database).

SHELL := /bin/bash
.DEFAULT_GOAL := help

PG_URL ?= postgres://postgres:postgres@127.0.0.1:5432
DB ?= waybill
BROKER_URL ?= amqp://guest:guest@127.0.0.1:5672/%2f
RUN_DIR ?= .run
SERVICES := waybill-api waybill-ingest waybill-dispatcher

export WAYBILL_DATABASE__URL ?= $(PG_URL)/$(DB)
export WAYBILL_BROKER__URL ?= $(BROKER_URL)
export WAYBILL_TEST_DATABASE_URL ?= $(PG_URL)/postgres
export WAYBILL_TEST_BROKER_URL ?= $(BROKER_URL)
export RUN_DIR

.PHONY: help run stop test lint fmt bench services db build toolchain openapi clean-test-dbs

help:
	@echo "make run    build and start Waybill with working defaults, print a token and examples"
	@echo "make stop   stop what 'make run' started"
	@echo "make test   run every test (sets up PostgreSQL and RabbitMQ first)"
	@echo "make lint   cargo fmt --check and clippy with warnings as errors"
	@echo "make bench  run the benchmarks against the real services"

toolchain:
	@command -v cargo >/dev/null || { echo "error: cargo not found; install Rust 1.88 or newer (https://rustup.rs)"; exit 1; }

services:
	@deploy/local/ensure-services.sh

db: services
	@psql "$(PG_URL)/postgres" -tAc "SELECT 1 FROM pg_database WHERE datname = '$(DB)'" | grep -q 1 \
	  || { psql "$(PG_URL)/postgres" -qc "CREATE DATABASE $(DB)" && echo "==> created database $(DB)"; }

build: toolchain
	cargo build --release --locked $(addprefix --bin ,$(SERVICES))

run: export WAYBILL_CONFIG ?= $(CURDIR)/deploy/local/waybill.toml
run: db build stop
	@deploy/local/run.sh

stop:
	@for s in $(SERVICES); do \
	  f="$(RUN_DIR)/$$s.pid"; \
	  if [ -f "$$f" ] && kill -0 "$$(cat $$f)" 2>/dev/null; then \
	    kill -TERM "$$(cat $$f)"; \
	    for _ in $$(seq 1 60); do kill -0 "$$(cat $$f)" 2>/dev/null || break; sleep 0.5; done; \
	    echo "==> stopped $$s"; \
	  fi; \
	  rm -f "$$f"; \
	done

# Databases of interrupted earlier runs (each test drops its own when it ends) and templates of
# earlier migrations; the tests re-create the template they need.
clean-test-dbs: services
	@for d in $$(psql "$(PG_URL)/postgres" -tAc "SELECT datname FROM pg_database WHERE datname LIKE 'waybill\_test\_%'"); do \
	  psql "$(PG_URL)/postgres" -qc "DROP DATABASE IF EXISTS $$d WITH (FORCE)"; \
	done

test: toolchain services clean-test-dbs
	@deploy/local/ensure-test-tools.sh
	@# The Kubernetes manifests, rendered and validated offline (a few seconds; deploy/README.md).
	@deploy/kubernetes/validate.sh
	@# The alert rules, their unit tests and the dashboard's queries (promtool), in seconds.
	@deploy/observability/validate.sh
	@mkdir -p target
	@rm -f target/outage-report.txt
	@set -o pipefail; cargo test --workspace --locked 2>&1 | tee target/test-output.log
	@# One line per outage test (crates/dispatcher/tests/outages/): accepted, delivered, duplicates.
	@cat target/outage-report.txt 2>/dev/null || true
	@awk '/^test result:/ { p += $$4; f += $$6 } END { printf "%d passed, %d failed\n", p, f }' target/test-output.log
	@# The OpenAPI documents against the running services: schemathesis with every check, bounded
	@# in time (see deploy/local/schemathesis.sh); its verdict is the last line.
	@deploy/local/schemathesis.sh

lint: toolchain
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

fmt: toolchain
	cargo fmt --all

openapi: toolchain
	UPDATE_OPENAPI=1 cargo test -p waybill-api --test api openapi
	UPDATE_OPENAPI=1 cargo test -p waybill-ingest --test ingest openapi
	UPDATE_OPENAPI=1 cargo test -p waybill-dispatcher --test dispatcher openapi

bench: toolchain db
	cargo build --release --locked -p waybill-bench -p waybill-api -p waybill-ingest -p waybill-dispatcher
	target/release/waybill-bench suite --seconds 20 --json target/bench/results.json
	@# What tracing costs: the same scenarios with traces off, exported, and the exporter down or hung.
	target/release/waybill-bench suite --seconds 20 --only steady-200,max-amqp --tracing off,on,down,hung --json target/bench/tracing.json
	target/release/waybill-bench down-receiver --rate 20 --seconds 60 --json target/bench/down-receiver.json
	target/release/waybill-bench api-roundtrip --json target/bench/api-roundtrip.json
	@# Matching with payload filters, in process: typical, worst case and filters at the limits.
	target/release/waybill-bench filter-index --json target/bench/filter-index.json
