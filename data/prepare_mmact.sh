#!/usr/bin/env bash
# Prepare MMAct (trimmed videos + sensor CSVs) into sharded TFRecords; see data/MMACT.md. PYTHON overrides the interpreter.
PYTHONPATH="$(cd "$(dirname "$0")/.." && pwd)${PYTHONPATH:+:$PYTHONPATH}" exec "${PYTHON:-python}" -m mumae_jax.data.prepare_mmact "$@"
