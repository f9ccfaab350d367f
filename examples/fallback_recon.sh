#!/bin/sh
# fallback_recon.sh — stand-in RECON_SCRIPT for a recon box where BART cannot
# be installed. It does NOT reconstruct anything. It lets a site check the whole
# recon path (upload, queue, script run, results back to the scanner) before
# the real reconstruction is in place, and it says so on stderr on every run.
#
# Usage (run by recon-server): fallback_recon.sh JOB_INPUT_DIR [--key value ...]
# All options are accepted and only echoed (they mean nothing here).
#
# For each regular, non-hidden file directly in JOB_INPUT_DIR it writes into
# $RECON_OUTPUT_DIR:
#   - with dcmtk (img2dcm): <file>.fallback.dcm, a small valid Secondary
#     Capture DICOM (a 64x64 checkerboard generated as a BMP here, because
#     img2dcm reads only JPEG and BMP) whose SeriesDescription says FALLBACK and
#     whose ImageComments carry the input's name, size and SHA-256;
#   - without dcmtk: <file>.summary.txt with the same name, size and SHA-256.
# Exit codes: 0 ok (placeholders written); 2 bad usage/environment; 4 no input
# files; 1 anything else. Errors end with one line "fallback_recon: error: ...".
set -eu

prog=fallback_recon

die() {
	printf '%s\n' "$prog: error: $1" >&2
	exit "${2:-1}"
}

[ "$#" -ge 1 ] || die "usage: fallback_recon.sh JOB_INPUT_DIR [--key value ...]" 2
indir=$1
shift
while [ "$#" -gt 0 ]; do
	case $1 in
	--*)
		[ "$#" -ge 2 ] || die "option $1 needs a value" 2
		printf '%s\n' "$prog: option $1 = $2 (ignored by the fallback)"
		shift 2
		;;
	*) die "unexpected argument '$1' (options are --key value pairs)" 2 ;;
	esac
done
[ -n "${RECON_OUTPUT_DIR:-}" ] ||
	die "RECON_OUTPUT_DIR is not set (recon-server sets it; by hand: RECON_OUTPUT_DIR=/some/dir $0 DIR)" 2
outdir=$RECON_OUTPUT_DIR
if [ ! -d "$outdir" ] || [ ! -w "$outdir" ]; then
	die "RECON_OUTPUT_DIR '$outdir' is not a writable directory" 2
fi
[ -d "$indir" ] || die "job input directory '$indir' does not exist" 2

echo "$prog: FALLBACK: this is NOT a reconstruction; writing placeholder results only (install BART and use examples/bart_recon.sh for images)" >&2
echo "PROGRESS 5"

# sha256 FILE: print the hex SHA-256 of FILE, or "unavailable".
sha256() {
	if command -v sha256sum >/dev/null 2>&1; then
		sha256sum <"$1" | cut -d ' ' -f 1
	elif command -v shasum >/dev/null 2>&1; then
		shasum -a 256 <"$1" | cut -d ' ' -f 1
	elif command -v openssl >/dev/null 2>&1; then
		openssl dgst -sha256 -r <"$1" | cut -d ' ' -f 1
	else
		echo unavailable
	fi
}

# le32 N: N as 4 little-endian bytes (for the BMP headers).
le32() {
	for shift_ in 0 8 16 24; do
		printf '%b' "\\0$(printf %03o $((($1 >> shift_) & 255)))"
	done
}

# make_bmp FILE: a 64x64 24-bit checkerboard (8x8 squares), uncompressed BMP.
make_bmp() {
	w=64
	row=$((w * 3)) # 192 bytes: already a multiple of 4, so no row padding
	pix=$((row * w))
	{
		printf 'BM'
		le32 $((54 + pix))
		le32 0
		le32 54
		le32 40
		le32 "$w"
		le32 "$w"
		printf '\001\000\030\000' # 1 plane, 24 bits per pixel
		le32 0                   # no compression
		le32 "$pix"
		le32 2835 # 72 dpi
		le32 2835
		le32 0
		le32 0
	} >"$1"
	# One 8-pixel dark and light run each; rows A and B alternate them.
	head -c 24 /dev/zero | tr '\000' '\100' >"$1.dark"
	head -c 24 /dev/zero | tr '\000' '\300' >"$1.light"
	cat "$1.dark" "$1.light" "$1.dark" "$1.light" "$1.dark" "$1.light" "$1.dark" "$1.light" >"$1.a"
	cat "$1.light" "$1.dark" "$1.light" "$1.dark" "$1.light" "$1.dark" "$1.light" "$1.dark" >"$1.b"
	cat "$1.a" "$1.a" "$1.a" "$1.a" "$1.a" "$1.a" "$1.a" "$1.a" >"$1.aa"
	cat "$1.b" "$1.b" "$1.b" "$1.b" "$1.b" "$1.b" "$1.b" "$1.b" >"$1.bb"
	for _ in 1 2 3 4; do cat "$1.aa" "$1.bb"; done >>"$1"
	rm -f -- "$1.dark" "$1.light" "$1.a" "$1.b" "$1.aa" "$1.bb"
}

work=$(mktemp -d "${TMPDIR:-/tmp}/fallback_recon.XXXXXX") || die "cannot create a temporary directory"
trap 'rm -rf -- "$work"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

use_dicom=0
if command -v img2dcm >/dev/null 2>&1; then
	use_dicom=1
	make_bmp "$work/placeholder.bmp"
else
	echo "$prog: dcmtk (img2dcm) not found: writing text summaries instead of DICOM" >&2
fi

count=0
first_dcm=
for f in "$indir"/*; do
	[ -f "$f" ] || continue
	count=$((count + 1))
	label=$(basename -- "$f")
	size=$(wc -c <"$f" | tr -d ' ')
	sum=$(sha256 "$f")
	printf '%s\n' "$prog: $label: $size bytes, sha256 $sum"
	if [ "$use_dicom" -eq 1 ]; then
		out="$outdir/$label.fallback.dcm"
		# DICOM text must not carry control characters or the value separator.
		clean=$(printf '%s' "$label" | tr -d '[:cntrl:]' | tr -d "\\\\" | cut -c1-200)
		set -- -q -i BMP -k "ImageComments=FALLBACK, NOT A RECONSTRUCTION. input $clean, $size bytes, sha256 $sum" \
			-k "SeriesDescription=FALLBACK placeholder (no reconstruction)" \
			-k "InstanceNumber=$count" -k "Modality=OT" -k "ConversionType=WSD" \
			-k "StudyDescription=recon job $(printf '%s' "${RECON_JOB_ID:-unknown}" | tr -cd 'A-Za-z0-9._-' | cut -c1-48)"
		# Later files join the first file's study and series.
		[ -z "$first_dcm" ] || set -- "$@" --series-from "$first_dcm"
		img2dcm "$@" "$work/placeholder.bmp" "$work/out.dcm" ||
			die "img2dcm failed for $label"
		mv -f -- "$work/out.dcm" "$out"
		[ -n "$first_dcm" ] || first_dcm=$out
	else
		{
			echo "FALLBACK SUMMARY: this is NOT a reconstruction."
			printf 'file: %s\n' "$label"
			echo "size_bytes: $size"
			echo "sha256: $sum"
		} >"$outdir/$label.summary.txt"
	fi
done
[ "$count" -gt 0 ] || die "no input files in $indir" 4
echo "PROGRESS 100"
echo "$prog: FALLBACK done: $count placeholder(s) written; no images were reconstructed" >&2
