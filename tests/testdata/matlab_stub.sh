#!/bin/sh
# matlab_stub.sh — stands in for MATLAB_COMMAND in the end-to-end tests: records the
# working directory and every argument it was given (one per line) into
# $RECON_OUTPUT_DIR/matlab_call.txt, so a test can check the Matlab call recon built.
set -eu
out=${RECON_OUTPUT_DIR:?RECON_OUTPUT_DIR is not set}
{
	printf 'cwd %s\n' "$(pwd)"
	printf 'arg %s\n' "$@"
} >"$out/matlab_call.txt"
