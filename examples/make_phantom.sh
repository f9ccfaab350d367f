#!/bin/sh
# make_phantom.sh — write simulated multi-coil MRI k-space for trying recon.
#
# Uses BART's numerical Shepp-Logan phantom (`bart phantom -k -s COILS -x SIZE`)
# to write OUTDIR/kspace.cfl + OUTDIR/kspace.hdr (BART's own format: a text
# header with the dimensions and raw complex float32 samples). Dimensions are
# BART's: x, y, z (1 unless --3d), coils. Send the pair to a recon server whose
# RECON_SCRIPT is examples/bart_recon.sh:
#
#   examples/make_phantom.sh /tmp/phantom
#   bin/recon-client --files /tmp/phantom/kspace.hdr /tmp/phantom/kspace.cfl
#
# Usage: make_phantom.sh OUTDIR [--coils N] [--size N] [--3d]
#   --coils N  receive coils, 1-8 (BART's phantom simulates at most 8); default 8
#   --size N   matrix size (N x N, or N x N x N with --3d), 8-1024; default 128
#   --3d       a 3-D phantom (size at most 256; 8 coils x 128^3 is 134 MB)
# Exit codes: 0 ok, 2 bad usage, 3 bart missing, 1 bart failed.
set -eu

prog=make_phantom.sh

usage() {
	echo "usage: $prog OUTDIR [--coils N] [--size N] [--3d]" >&2
	exit 2
}

die() {
	printf '%s\n' "$prog: $1" >&2
	exit "${2:-1}"
}

# is_int VALUE MIN MAX: true when VALUE is a decimal integer within [MIN, MAX].
is_int() {
	case $1 in
	'' | *[!0-9]*) return 1 ;;
	esac
	# Reject absurdly long digit strings before shell arithmetic sees them.
	[ "${#1}" -le 6 ] || return 1
	[ "$1" -ge "$2" ] && [ "$1" -le "$3" ]
}

[ "$#" -ge 1 ] || usage
case $1 in
-h | --help)
	sed -n '2,17s/^# \{0,1\}//p' "$0"
	exit 0
	;;
-*) usage ;;
esac
outdir=$1
shift

coils=8
size=128
threed=0
while [ "$#" -gt 0 ]; do
	case $1 in
	--coils | --size)
		[ "$#" -ge 2 ] || die "option $1 needs a value" 2
		if [ "$1" = --coils ]; then coils=$2; else size=$2; fi
		shift 2
		;;
	--3d)
		threed=1
		shift
		;;
	-h | --help)
		sed -n '2,17s/^# \{0,1\}//p' "$0"
		exit 0
		;;
	*) die "unknown argument '$1' (expected --coils N, --size N or --3d)" 2 ;;
	esac
done

is_int "$coils" 1 8 || die "--coils must be an integer from 1 to 8 (BART's phantom simulates at most 8 coils), got '$coils'" 2
maxsize=1024
[ "$threed" -eq 0 ] || maxsize=256
is_int "$size" 8 "$maxsize" || die "--size must be an integer from 8 to $maxsize, got '$size'" 2

command -v bart >/dev/null 2>&1 ||
	die "bart not found on PATH; install it (Debian/Ubuntu: apt-get install bart)" 3

mkdir -p -- "$outdir" || die "cannot create output directory '$outdir'"
if [ ! -d "$outdir" ] || [ ! -w "$outdir" ]; then
	die "output directory '$outdir' is not writable"
fi

# A single coil is simply the phantom without -s (BART then writes no coil dim).
set -- -k -x "$size"
[ "$coils" -eq 1 ] || set -- "$@" -s "$coils"
[ "$threed" -eq 0 ] || set -- "$@" -3

# Write under a temporary name, then rename, so OUTDIR never holds half a pair.
tmp="$outdir/.kspace.$$"
trap 'rm -f -- "$tmp.cfl" "$tmp.hdr"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
bart phantom "$@" "$tmp" >/dev/null || die "bart phantom failed (see the message above)"
mv -f -- "$tmp.cfl" "$outdir/kspace.cfl"
mv -f -- "$tmp.hdr" "$outdir/kspace.hdr"

dims=$(awk 'f { $1 = $1; print; exit } /^# Dimensions/ { f = 1 }' "$outdir/kspace.hdr")
printf '%s\n' "$prog: wrote $outdir/kspace.hdr and $outdir/kspace.cfl (dims: $dims)"
