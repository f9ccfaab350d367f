#!/bin/sh
# bart_recon.sh — example recon-server RECON_SCRIPT: a real (simple) MRI
# reconstruction of fully sampled Cartesian k-space with BART.
#
# Contract (see examples/README.md):
#   bart_recon.sh JOB_INPUT_DIR [--key value ...]
#   RECON_OUTPUT_DIR  existing per-job directory; every file written there is
#                     sent back to the client (required)
#   RECON_JOB_ID      job id, recorded in the DICOM StudyDescription (optional)
#   stdout "PROGRESS n" lines set the job's progress; other lines are messages.
#
# For every BART k-space pair NAME.hdr + NAME.cfl in JOB_INPUT_DIR (other files
# are ignored) it does:
#   1. inverse centred FFT over x,y (bitmask 3) or x,y,z (bitmask 7, when the
#      z dimension is larger than 1 or --dims 3 is given)   bart fft -i -u
#   2. root-sum-of-squares coil combination over dim 3    bart rss 8
#   3. magnitude images scaled to the full 16-bit range    bart toimg NAME.dcm
#      (BART writes a minimal "proto-DICOM"; when dcmtk's dcmodify is present
#      the files become Secondary Capture objects with study/series/instance
#      UIDs, so PACS and viewers accept them)
# and writes the DICOM files to $RECON_OUTPUT_DIR.
#
# Options (values are taken literally, the server passes them as argv):
#   --name PREFIX  series description and file prefix, default "recon" (with
#                  several k-space pairs: "PREFIX series N", never the input's name);
#                  letters, digits, '.', '_', '-' (max 64, not starting with
#                  '.' or '-'); anything else is rejected (exit 2).
#   --dims auto|2|3  FFT over x,y (2) or x,y,z (3); auto (default) picks 3
#                  when the k-space has more than one z sample.
# Unknown options are reported on stderr and IGNORED (exit status unaffected),
# so one recon-options set can be shared between scripts; stray positional
# arguments are rejected.
#
# Exit codes: 0 ok; 1 reconstruction failed; 2 bad usage or environment
# (RECON_OUTPUT_DIR unset, bad option value); 3 bart missing; 4 no k-space.
# Every failure ends with one line "bart_recon: error: <reason>" on stderr.
set -eu

prog=bart_recon

say() { printf '%s\n' "$prog: $*"; }
warn() { printf '%s\n' "$prog: warning: $*" >&2; }
die() {
	printf '%s\n' "$prog: error: $1" >&2
	exit "${2:-1}"
}
progress() { echo "PROGRESS $1"; }

# ---- arguments -------------------------------------------------------------
[ "$#" -ge 1 ] || die "usage: bart_recon.sh JOB_INPUT_DIR [--name PREFIX] [--dims auto|2|3]" 2
indir=$1
shift
case $indir in
-*) die "first argument must be the job input directory, got option '$indir'" 2 ;;
esac

name=recon
dims_opt=auto
while [ "$#" -gt 0 ]; do
	case $1 in
	--*)
		[ "$#" -ge 2 ] || die "option $1 needs a value" 2
		key=$1 val=$2
		shift 2
		case $key in
		--name) name=$val ;;
		--dims) dims_opt=$val ;;
		*) warn "ignoring unknown option $key (supported: --name, --dims)" ;;
		esac
		;;
	*) die "unexpected argument '$1' (options are --key value pairs)" 2 ;;
	esac
done

case $name in
'' | [.-]* | *[!A-Za-z0-9._-]*)
	die "--name must be letters, digits, '.', '_' or '-' (not starting with '.' or '-'), got '$name'" 2
	;;
esac
[ "${#name}" -le 64 ] || die "--name is longer than 64 characters" 2
case $dims_opt in
auto | 2 | 3) ;;
*) die "--dims must be auto, 2 or 3, got '$dims_opt'" 2 ;;
esac

# ---- environment -----------------------------------------------------------
[ -n "${RECON_OUTPUT_DIR:-}" ] ||
	die "RECON_OUTPUT_DIR is not set (recon-server sets it; by hand: RECON_OUTPUT_DIR=/some/dir $0 DIR)" 2
outdir=$RECON_OUTPUT_DIR
if [ ! -d "$outdir" ] || [ ! -w "$outdir" ]; then
	die "RECON_OUTPUT_DIR '$outdir' is not a writable directory" 2
fi
[ -d "$indir" ] || die "job input directory '$indir' does not exist" 2
command -v bart >/dev/null 2>&1 ||
	die "bart not found on PATH; install it (apt-get install bart) or use examples/fallback_recon.sh" 3

# Job id only goes into a DICOM text field: keep it to harmless characters.
job_id=$(printf '%s' "${RECON_JOB_ID:-}" | tr -cd 'A-Za-z0-9._-' | cut -c1-48)

progress 5
say "job ${job_id:-(no id)}: looking for BART k-space (*.hdr + *.cfl) in $indir"

# ---- find k-space ----------------------------------------------------------
# hdr_dims FILE: print the 16 dimensions from a BART header, or nothing.
hdr_dims() {
	awk 'f { $1 = $1; print; exit } /^# Dimensions/ { f = 1 }' "$1" 2>/dev/null || true
}

# cfl_ok BASE DIMS: the .cfl holds exactly prod(DIMS) complex float32 samples.
cfl_ok() {
	size=$(wc -c <"$1.cfl" | tr -d ' ')
	printf '%s\n' "$2" | awk -v size="$size" '{
		n = 1
		for (i = 1; i <= NF; i++) { if ($i !~ /^[0-9]+$/ || $i < 1) exit 1; n *= $i }
		exit !(NF >= 2 && n * 8 == size)
	}'
}

# Valid pairs are collected as newline-separated base paths (names with a
# newline are skipped: they cannot come from recon-client anyway).
pairs=
npairs=0
for hdr in "$indir"/*.hdr; do
	[ -f "$hdr" ] || continue
	base=${hdr%.hdr}
	case $base in
	*'
'*)
		warn "skipping a file name containing a newline"
		continue
		;;
	esac
	if [ ! -f "$base.cfl" ]; then
		warn "skipping $(basename -- "$hdr"): no matching .cfl file"
		continue
	fi
	d=$(hdr_dims "$hdr")
	if [ -z "$d" ]; then
		warn "skipping $(basename -- "$hdr"): not a BART header (no '# Dimensions' line)"
		continue
	fi
	if ! cfl_ok "$base" "$d"; then
		die "$(basename -- "$base").cfl does not match its header (dims $(printf '%s' "$d" | cut -c1-80)): truncated or corrupt upload?"
	fi
	pairs="$pairs$base
"
	npairs=$((npairs + 1))
done
[ "$npairs" -gt 0 ] || die "no BART k-space found in $indir (expected NAME.hdr + NAME.cfl)" 4
say "found $npairs k-space data set(s)"
have_dcmtk=0
if command -v dcmodify >/dev/null 2>&1 && command -v dcmdump >/dev/null 2>&1; then
	have_dcmtk=1
else
	warn "dcmtk (dcmodify) not found: writing BART's minimal DICOM without UIDs (apt-get install dcmtk)"
fi
progress 10

# ---- work area (never inside RECON_OUTPUT_DIR: all of that is sent back) ----
work=$(mktemp -d "${TMPDIR:-/tmp}/bart_recon.XXXXXX") || die "cannot create a temporary directory"
trap 'rm -rf -- "$work"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
mkdir "$work/out"

# step WHAT CMD...: run a command; on failure stop with a one-line reason.
step() {
	what=$1
	shift
	"$@" || die "$what failed (exit $?)"
}

# dcm_uid FILE TAG: print the UID value of TAG from a DICOM file.
dcm_uid() {
	dcmdump -q -s +P "$2" "$1" | sed -n 's/^[^[]*\[\([0-9.]*\)\].*$/\1/p' | head -n 1
}

study_uid=
today=$(date +%Y%m%d)
now=$(date +%H%M%S)
series=0
nimages=0
# Read the list from fd 3 (a here-document: no subshell, so counters and UIDs
# survive, and nothing in the loop can swallow the list through stdin).
while IFS= read -r base <&3; do
	[ -n "$base" ] || continue
	series=$((series + 1))
	label=$(basename -- "$base")
	d=$(hdr_dims "$base.hdr")
	# Split the (already validated, all-numeric) dimension list on purpose.
	set -f
	# shellcheck disable=SC2086
	set -- $d
	set +f
	nz=$3
	ncoils=$4
	case $dims_opt in
	2) mask=3 ;;
	3) mask=7 ;;
	*) if [ "$nz" -gt 1 ]; then mask=7; else mask=3; fi ;;
	esac
	lo=$((10 + 80 * (series - 1) / npairs))
	span=$((80 / npairs))

	say "[$label] dims $d; inverse FFT (bitmask $mask)"
	step "bart fft on $label" bart fft -i -u "$mask" "$base" "$work/img"
	progress $((lo + span * 4 / 10))

	say "[$label] root-sum-of-squares over $ncoils coil(s)"
	step "bart rss on $label" bart rss 8 "$work/img" "$work/rss"
	rm -f -- "$work/img.cfl" "$work/img.hdr"
	progress $((lo + span * 6 / 10))

	# File prefix: the name alone for one data set, name_label for several.
	if [ "$npairs" -eq 1 ]; then
		prefix=$name
		desc=$name
	else
		safe=$(printf '%s' "$label" | tr -c 'A-Za-z0-9._-' '_' | cut -c1-40)
		prefix=${name}_$safe
		if [ -n "$(find "$work/out" -name "$prefix*" -print | head -n 1)" ]; then
			prefix=${prefix}_$series
		fi
		# Not the input's name: SeriesDescription travels with the images into a PACS
		# (DEFAULT_DESTINATIONS), and a raw file's name may carry the patient's.
		desc="$name series $series"
	fi
	mkdir "$work/s$series"
	step "bart toimg on $label" bart toimg "$work/rss" "$work/s$series/$prefix.dcm" >/dev/null
	rm -f -- "$work/rss.cfl" "$work/rss.hdr"
	progress $((lo + span * 8 / 10))

	# Turn BART's proto-DICOM into Secondary Capture objects sharing one
	# study (per job) and one series (per data set).
	count=0
	series_uid=
	for f in "$work/s$series"/*.dcm; do
		count=$((count + 1))
		if [ "$have_dcmtk" -eq 1 ]; then
			set -- -nb -gin \
				-i "SOPClassUID=1.2.840.10008.5.1.4.1.1.7" \
				-i "ImageType=DERIVED\\SECONDARY" \
				-i "Modality=MR" -i "ConversionType=WSD" \
				-i "PatientName=" -i "PatientID=" -i "PatientBirthDate=" -i "PatientSex=" \
				-i "StudyDate=$today" -i "StudyTime=$now" -i "ContentDate=$today" -i "ContentTime=$now" \
				-i "ReferringPhysicianName=" -i "StudyID=" -i "AccessionNumber=" \
				-i "StudyDescription=recon job ${job_id:-unknown}" \
				-i "SeriesDescription=$desc" -i "SeriesNumber=$series" \
				-i "InstanceNumber=$count" -i "PatientOrientation=" \
				-i "Manufacturer=recon examples/bart_recon.sh (BART)"
			if [ -n "$study_uid" ]; then
				set -- "$@" -i "StudyInstanceUID=$study_uid"
			else
				set -- "$@" -gst
			fi
			if [ -n "$series_uid" ]; then
				set -- "$@" -i "SeriesInstanceUID=$series_uid"
			else
				set -- "$@" -gse
			fi
			step "dcmodify on $(basename -- "$f")" dcmodify -q "$@" "$f"
			[ -n "$study_uid" ] || study_uid=$(dcm_uid "$f" StudyInstanceUID)
			[ -n "$series_uid" ] || series_uid=$(dcm_uid "$f" SeriesInstanceUID)
			if [ -z "$study_uid" ] || [ -z "$series_uid" ]; then
				die "could not read back the UIDs dcmodify generated for $(basename -- "$f")"
			fi
		fi
	done
	[ "$count" -gt 0 ] || die "bart toimg wrote no images for $label"
	nimages=$((nimages + count))
	mv -- "$work/s$series"/*.dcm "$work/out/"
	say "[$label] wrote $count DICOM image(s) as $prefix*.dcm"
	progress $((lo + span))
done 3<<EOF
$pairs
EOF

# Publish only complete results into the output directory.
for f in "$work/out"/*.dcm; do
	mv -f -- "$f" "$outdir/" || die "cannot move results into $outdir"
done
progress 100
say "done: $nimages DICOM image(s) in $npairs series written to $outdir"
