#!/usr/bin/env bash
# The whole test suite: unit, property and integration tests (real servers on
# loopback). Heavy runs (30,000 connections, fuzzing) are separate: see
# README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace
