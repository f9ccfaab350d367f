#!/usr/bin/env bash
# make demo: the whole recon workflow on loopback, for real.
#
# Makes a throw-away recon.opts with a fresh SHARED_KEY under demo-work/, starts
# recon-server on a free 127.0.0.1 port with examples/bart_recon.sh as RECON_SCRIPT,
# simulates multi-coil phantom k-space with BART, submits it with recon-client,
# receives the DICOM images, checks them with dcmtk's dcmdump, prints where they are,
# and stops the server. If BART cannot be installed it says so and uses
# examples/fallback_recon.sh, which is clearly not a reconstruction.
#
# DEMO_PACS=1 (make demo DEMO_PACS=1): also starts a local Orthanc PACS
# (scripts/orthanc-local), names it DESTINATION_DEMOPACS in DEFAULT_DESTINATIONS, waits
# until the server has sent every image to it with C-STORE, and leaves Orthanc running
# with its web address printed so the images can be looked at in a browser.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
work="$root/demo-work"
say() { printf 'demo: %s\n' "$*" >&2; }
fail() { printf 'demo: FAILED: %s\n' "$*" >&2; exit 1; }

install_missing() {
  local missing=()
  command -v bart >/dev/null 2>&1 || missing+=(bart)
  command -v dcmdump >/dev/null 2>&1 || missing+=(dcmtk)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing ${missing[*]} with apt-get (one time)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}") >/dev/null 2>&1 ||
      say "apt-get could not install ${missing[*]}"
  else
    say "missing ${missing[*]}; install with: sudo apt-get install ${missing[*]}"
  fi
}

install_missing
# An Orthanc left by an earlier DEMO_PACS=1 run goes with its directory.
[ -f "$work/orthanc/orthanc.pid" ] && "$root/scripts/orthanc-local" down "$work/orthanc" >/dev/null
rm -rf "$work"
mkdir -p "$work/scan"

pacs_options=""
if [ "${DEMO_PACS:-0}" = 1 ]; then
  say "starting a local Orthanc PACS (scripts/orthanc-local)"
  pacs=$("$root/scripts/orthanc-local" up "$work/orthanc") || fail "Orthanc did not start"
  pacs_dicom=$(sed -n 's/.* dicom=\([0-9]*\).*/\1/p' <<<"$pacs")
  pacs_http=$(sed -n 's/.* http=\([0-9]*\).*/\1/p' <<<"$pacs")
  pacs_options="DESTINATION_DEMOPACS = dicom://ORTHANC@127.0.0.1:$pacs_dicom?calling=RECONDEMO&timeout=10
DEFAULT_DESTINATIONS = DEMOPACS"
fi

if command -v bart >/dev/null 2>&1; then
  script="$root/examples/bart_recon.sh"
  say "simulating 8-coil 128x128 phantom k-space with BART"
  "$root/examples/make_phantom.sh" "$work/scan" >/dev/null
  inputs=("$work/scan/kspace.hdr" "$work/scan/kspace.cfl")
else
  script="$root/examples/fallback_recon.sh"
  say "BART is not available: using the FALLBACK script, which does not reconstruct"
  head -c 4194304 /dev/urandom >"$work/scan/P00000.7"
  inputs=("$work/scan/P00000.7")
fi

key=$("$root/bin/recon-server" keygen)
cat >"$work/recon.opts" <<OPTS
# recon.opts for 'make demo' (throw-away; a fresh key each run)
127.0.0.1
60000
sdc
adw2.0
22
/usr/g/mrraw/
$work/server/pfiles
$script
$work/server/dicoms
/tmp/scanner_dicoms/
$work/recon.log
SHARED_KEY = $key
MAX_CONCURRENT_JOBS = 1
JOB_TIMEOUT = 300
SHUTDOWN_GRACE = 5
CLIENT_DOWNLOAD_DIR = $work/downloads
$pacs_options
OPTS
chmod 600 "$work/recon.opts"

say "starting recon-server"
"$root/bin/recon-server" --opts "$work/recon.opts" --host 127.0.0.1 --port 0 2>"$work/server.err" &
server_pid=$!
stop_server() {
  if kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
}
trap stop_server EXIT

port=""
for _ in $(seq 200); do
  port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/server.err" | head -n 1)
  [ -n "$port" ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.err" >&2; fail "recon-server exited"; }
  sleep 0.1
done
[ -n "$port" ] || fail "recon-server did not start listening within 20 s"
say "recon-server listening on 127.0.0.1:$port"

say "submitting ${#inputs[@]} file(s) with recon-client"
results=$("$root/bin/recon-client" --opts "$work/recon.opts" --port "$port" \
  --files "${inputs[@]}" --recon-options '{"name": "phantom"}') ||
  fail "recon-client exited with code $?"
[ -n "$results" ] || fail "no result files came back"

count=0
while IFS= read -r file; do
  count=$((count + 1))
  case "$file" in
    *.dcm)
      if command -v dcmdump >/dev/null 2>&1; then
        dcmdump "$file" >"$work/dcmdump.txt" 2>&1 || fail "dcmdump cannot read $file"
        rows=$(sed -n 's/.*(0028,0010) US \([0-9]*\).*/\1/p' "$work/dcmdump.txt" | head -n 1)
        cols=$(sed -n 's/.*(0028,0011) US \([0-9]*\).*/\1/p' "$work/dcmdump.txt" | head -n 1)
        say "dcmdump reads $(basename "$file"): ${rows:-?} rows x ${cols:-?} columns"
      else
        say "got $file (dcmdump not installed, not checked)"
      fi
      ;;
    *) say "got $file" ;;
  esac
done <<<"$results"

if [ "${DEMO_PACS:-0}" = 1 ]; then
  images=$(grep -c '\.dcm$' <<<"$results" || true)
  say "waiting for the server to send $images image(s) to Orthanc (DESTINATION_DEMOPACS)"
  stored=0
  for _ in $(seq 600); do
    stored=$(python3 -c "import json, urllib.request; print(json.load(urllib.request.urlopen('http://127.0.0.1:$pacs_http/statistics', timeout=2))['CountInstances'])" 2>/dev/null || echo 0)
    [ "$stored" -ge "$images" ] && break
    sleep 0.1
  done
  [ "$stored" -ge "$images" ] ||
    fail "Orthanc holds $stored of $images image(s) after 60 s; see recon-client jobs and $work/server.err"
  "$root/bin/recon-client" --opts "$work/recon.opts" --port "$port" jobs >&2 || true
fi

stop_server
trap - EXIT
say "OK: $count result file(s) in $(dirname "$(head -n 1 <<<"$results")"):"
printf '%s\n' "$results"
if [ "${DEMO_PACS:-0}" = 1 ]; then
  say "OK: Orthanc holds the $stored image(s): http://127.0.0.1:$pacs_http/app/explorer.html"
  say "Orthanc keeps running so you can look; stop it with: scripts/orthanc-local down $work/orthanc"
fi
