#!/bin/sh
# noop_recon.sh — a do-nothing RECON_SCRIPT for tests and benchmarks: it reads
# no file contents and writes one small file, $RECON_OUTPUT_DIR/result.txt,
# listing the job id, the options it was given and each input file's name and
# size in bytes. Use it to measure recon's own overhead (transfer, queue,
# process start, result return) without a reconstruction in the way.
#
# Usage (run by recon-server): noop_recon.sh JOB_INPUT_DIR [--key value ...]
# Exit codes: 0 ok; 2 bad usage or RECON_OUTPUT_DIR unset/unwritable.
set -eu

die() {
	printf '%s\n' "noop_recon: error: $1" >&2
	exit 2
}

[ "$#" -ge 1 ] || die "usage: noop_recon.sh JOB_INPUT_DIR [--key value ...]"
indir=$1
shift
[ -n "${RECON_OUTPUT_DIR:-}" ] || die "RECON_OUTPUT_DIR is not set"
[ -d "$RECON_OUTPUT_DIR" ] || die "RECON_OUTPUT_DIR '$RECON_OUTPUT_DIR' is not a directory"
[ -d "$indir" ] || die "job input directory '$indir' does not exist"

result=$RECON_OUTPUT_DIR/result.txt
{
	printf 'noop_recon: no reconstruction was done\n'
	printf 'job: %s\n' "${RECON_JOB_ID:-unknown}"
	for arg in "$@"; do
		printf 'arg: %s\n' "$arg"
	done
	for f in "$indir"/*; do
		[ -f "$f" ] || continue
		printf 'file: %s %s\n' "$(wc -c <"$f" | tr -d ' ')" "${f##*/}"
	done
} >"$result" || die "cannot write $result"
echo "PROGRESS 100"
