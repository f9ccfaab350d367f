#!/bin/sh
# e2e_recon.sh — RECON_SCRIPT for the end-to-end tests (tests/e2e_*_test.ts).
#
# Usage (run by recon-server): e2e_recon.sh JOB_INPUT_DIR [--key value ...]
#
# Normally it writes into $RECON_OUTPUT_DIR:
#   manifest.txt        "arg <value>" for every argv entry (JOB_INPUT_DIR first), then
#                       "sha256 <hex> <name>" for every input file
#   derived/<name>.copy a byte-for-byte copy of every input file
# Recon options the tests use to make a job behave in a certain way (others are
# only recorded):
#   --timeline FILE     append "start|end <ns> <job id>" lines to FILE
#   --wait_for FILE     wait (at most 60 s) until FILE exists
#   --sleep SECONDS     sleep before finishing
#   --progress PERCENT  print "PROGRESS <percent>" on stdout
#   --stderr_lines N    print N lines "e2e stderr line <i>" on stderr
#   --exit CODE         exit with CODE (after the stderr lines, before any result)
#   --hang SECONDS      start "sleep SECONDS" in the background and another in the
#                       foreground (a unique SECONDS value is the marker for pgrep)
#   --flood N           print N lines of about 200 characters on stdout
#   --no_output 1       write no result file
#   --symlink TARGET    also create $RECON_OUTPUT_DIR/link -> TARGET
set -eu

indir=$1
shift
out=${RECON_OUTPUT_DIR:?RECON_OUTPUT_DIR is not set}
argv_text=$(printf 'arg %s\n' "$indir" "$@")

timeline=
wait_for=
sleep_s=
progress=
stderr_lines=0
exit_code=
hang=
flood=
no_output=
symlink=
while [ "$#" -ge 2 ]; do
	case $1 in
	--timeline) timeline=$2 ;;
	--wait_for) wait_for=$2 ;;
	--sleep) sleep_s=$2 ;;
	--progress) progress=$2 ;;
	--stderr_lines) stderr_lines=$2 ;;
	--exit) exit_code=$2 ;;
	--hang) hang=$2 ;;
	--flood) flood=$2 ;;
	--no_output) no_output=$2 ;;
	--symlink) symlink=$2 ;;
	esac
	shift 2
done

[ -z "$timeline" ] || printf 'start %s %s\n' "$(date +%s%N)" "${RECON_JOB_ID:-}" >>"$timeline"

if [ -n "$wait_for" ]; then
	i=0
	while [ ! -e "$wait_for" ]; do
		i=$((i + 1))
		if [ "$i" -gt 1200 ]; then
			echo "e2e_recon: gave up waiting for $wait_for" >&2
			exit 9
		fi
		sleep 0.05
	done
fi
[ -z "$sleep_s" ] || sleep "$sleep_s"
[ -z "$progress" ] || echo "PROGRESS $progress"

i=1
while [ "$i" -le "$stderr_lines" ]; do
	echo "e2e stderr line $i" >&2
	i=$((i + 1))
done
[ -z "$exit_code" ] || exit "$exit_code"

if [ -n "$hang" ]; then
	sleep "$hang" &
	sleep "$hang"
fi

if [ -n "$flood" ]; then
	awk -v n="$flood" 'BEGIN {
		pad = "flood-flood-flood-flood-flood-flood-flood-flood-flood-flood"
		pad = pad pad pad
		for (i = 1; i <= n; i++) print "line " i " " pad
	}'
fi

if [ -z "$no_output" ]; then
	mkdir -p "$out/derived"
	{
		printf '%s\n' "$argv_text"
		for f in "$indir"/*; do
			[ -f "$f" ] || continue
			name=${f##*/}
			printf 'sha256 %s %s\n' "$(sha256sum <"$f" | cut -d ' ' -f 1)" "$name"
			cp -- "$f" "$out/derived/$name.copy"
		done
	} >"$out/manifest.txt"
fi
[ -z "$symlink" ] || ln -s -- "$symlink" "$out/link"

[ -z "$timeline" ] || printf 'end %s %s\n' "$(date +%s%N)" "${RECON_JOB_ID:-}" >>"$timeline"
exit 0
