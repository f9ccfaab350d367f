#!/bin/sh
# big_result_recon.sh — RECON_SCRIPT for the benchmark's result-download case: puts
# a large, pre-made file into $RECON_OUTPUT_DIR as the job's result, by hard link
# (instant on the same file system) or else by `cp --reflink=auto`, and records
# how long that took so the benchmark can subtract the script's own time.
#
# Usage: big_result_recon.sh JOB_INPUT_DIR --source FILE --timing FILE
set -eu
[ "$#" -eq 5 ] && [ "$2" = "--source" ] && [ "$4" = "--timing" ] ||
	{ echo "usage: big_result_recon.sh JOB_INPUT_DIR --source FILE --timing FILE" >&2; exit 2; }
source=$3
timing=$5
[ -d "${RECON_OUTPUT_DIR:-}" ] || { echo "big_result_recon: RECON_OUTPUT_DIR is not a directory" >&2; exit 2; }
start=$(date +%s%N)
ln "$source" "$RECON_OUTPUT_DIR/result.bin" 2>/dev/null ||
	cp --reflink=auto "$source" "$RECON_OUTPUT_DIR/result.bin"
end=$(date +%s%N)
echo "$start $end" >"$timing"
echo "PROGRESS 100"
