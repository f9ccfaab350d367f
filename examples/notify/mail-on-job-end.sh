#!/bin/sh
# mail-on-job-end.sh — an ON_JOB_END program: mails one short message when a job
# succeeds, fails or is cancelled, through this host's own mailer (`sendmail -t`,
# else `mail`). The mail names the job id, its state, the client, the number of
# result files, and for a failed job the reason and exit code. It never names a file
# of the job: input and result names may identify a patient. A cancelled job's
# reason is free text someone typed, so it is left out too.
#
# Usage (run by recon-server, see examples/notify/README.md):
#   mail-on-job-end.sh JOB_ID STATE CLIENT RESULT_DIR
# Environment: RECON_RESULT_COUNT, RECON_EXIT_CODE, RECON_REASON (set by the
# server); RECON_NOTIFY_TO (recipients, comma-separated; default root) and
# RECON_NOTIFY_FROM (optional From address), RECON_MAILER (sendmail or mail: which
# to use; default the first found), set in the server's environment.
# Exit codes: 0 handed to the mailer; 1 no mailer or the mailer failed; 2 bad usage.
set -eu

die() {
	printf '%s\n' "mail-on-job-end: $2" >&2
	exit "$1"
}

[ "$#" -ge 3 ] || die 2 "usage: mail-on-job-end.sh JOB_ID STATE CLIENT [RESULT_DIR]"
job_id=$1
state=$2
client=$3
to=${RECON_NOTIFY_TO:-root}
from=${RECON_NOTIFY_FROM:-}

# A header value on one line, printable ASCII only (no header can be added through it).
header() {
	printf '%s' "$1" | tr -d '\r\n' | tr -c '[:print:]' '?'
}

host=$(uname -n 2>/dev/null || echo unknown)
subject="recon: job $job_id $state (client $client)"

body() {
	printf 'Job:        %s\n' "$job_id"
	printf 'State:      %s\n' "$state"
	printf 'Client:     %s\n' "$client"
	printf 'Server:     %s\n' "$host"
	case $state in
	succeeded)
		printf 'Results:    %s file(s)\n' "${RECON_RESULT_COUNT:-?}"
		;;
	failed)
		printf 'Reason:     %s\n' "${RECON_REASON:-unknown}"
		[ -z "${RECON_EXIT_CODE:-}" ] || printf 'Exit code:  %s\n' "$RECON_EXIT_CODE"
		;;
	cancelled)
		printf 'Reason:     not included (free text); see recon-client jobs (job %s)\n' "$job_id"
		;;
	esac
	printf '\nFile names are not included: they may identify a patient.\n'
	printf 'Details: recon-client jobs and recon-client logs %s, or the server log.\n' "$job_id"
}

# sendmail is often outside a user's PATH.
PATH=$PATH:/usr/sbin:/usr/lib
mailer=${RECON_MAILER:-}
if [ -z "$mailer" ]; then
	if command -v sendmail >/dev/null 2>&1; then
		mailer=sendmail
	elif command -v mail >/dev/null 2>&1; then
		mailer=mail
	else
		die 1 "neither sendmail nor mail is installed; install a mail transfer agent (e.g. apt-get install msmtp-mta or postfix)"
	fi
fi

case $mailer in
sendmail)
	{
		printf 'To: %s\n' "$(header "$to")"
		[ -z "$from" ] || printf 'From: %s\n' "$(header "$from")"
		printf 'Subject: %s\n' "$(header "$subject")"
		printf 'Auto-Submitted: auto-generated\n'
		printf 'Content-Type: text/plain; charset=UTF-8\n'
		printf '\n'
		body
	} | sendmail -t -oi || die 1 "sendmail failed (exit $?); is the mail transfer agent configured?"
	;;
mail)
	# mail takes the recipients as arguments: one per comma-separated entry.
	old_ifs=$IFS
	IFS=,
	# shellcheck disable=SC2086 # split on commas on purpose
	set -- $to
	IFS=$old_ifs
	body | mail -s "$(header "$subject")" "$@" || die 1 "mail failed (exit $?); is the mail transfer agent configured?"
	;;
*)
	die 2 "RECON_MAILER must be sendmail or mail, not '$mailer'"
	;;
esac
