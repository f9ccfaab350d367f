#!/bin/sh
# tiny_recon.sh — RECON_SCRIPT for the benchmark's tiny job round trip: copies the
# job's input files (1 KB) into $RECON_OUTPUT_DIR, so 1 KB goes in and 1 KB comes
# back. The scp + ssh peer runs this same script over ssh.
#
# Usage: tiny_recon.sh JOB_INPUT_DIR   (RECON_OUTPUT_DIR set by recon-server)
set -eu
[ "$#" -ge 1 ] || { echo "usage: tiny_recon.sh JOB_INPUT_DIR" >&2; exit 2; }
[ -d "${RECON_OUTPUT_DIR:-}" ] || { echo "tiny_recon: RECON_OUTPUT_DIR is not a directory" >&2; exit 2; }
for f in "$1"/*; do
	[ -f "$f" ] && cp "$f" "$RECON_OUTPUT_DIR/result_${f##*/}"
done
echo "PROGRESS 100"
