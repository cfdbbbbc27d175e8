#!/bin/sh
# Slurm Prolog (slurm.conf: Prolog=/etc/slurm/prolog.d/warpdrive.sh): before a job starts on
# this node, warm warpdrive's block cache with what the job will read, through the running
# daemon (`warpdrive-mount warm`, over its control socket).
#
# A job asks for it in its comment:  sbatch --comment "warpdrive-warm=training:imagenet/train/" …
# (several: separated by commas, each BACKEND:PREFIX, BACKEND being a backend's `name`).
#
# A prolog that fails drains the node, so this never fails the job: a missing daemon, a
# timeout or a failed object is logged (syslog tag warpdrive-prolog) and the job starts anyway,
# reading what is not cached from the backend.
set -u
# Settings of this script are WD_*: WARPDRIVE_* variables are config overrides of the daemon's
# own (WARPDRIVE_CONFIG names its config file) and would reach `warpdrive-mount warm`.
CONFIG="${WARPDRIVE_CONFIG:-/etc/warpdrive/warpdrive.yaml}"
TIMEOUT="${WD_WARM_TIMEOUT:-1800}"   # seconds the whole warm may take
BIN="${WD_BIN:-/usr/local/bin/warpdrive-mount}"

log() { logger -t warpdrive-prolog -- "job ${SLURM_JOB_ID:-?}: $*" 2>/dev/null || echo "warpdrive-prolog: $*" >&2; }

[ -n "${SLURM_JOB_ID:-}" ] || { log "SLURM_JOB_ID is not set; nothing to do"; exit 0; }
comment="${WD_WARM:-}"
if [ -z "$comment" ]; then
    comment=$(scontrol show job -o "$SLURM_JOB_ID" 2>/dev/null | sed -n 's/.*Comment=\([^ ]*\).*/\1/p')
fi
requests=$(printf '%s\n' "$comment" | sed -n 's/.*warpdrive-warm=\([^ ;]*\).*/\1/p')
[ -n "$requests" ] || exit 0

old_ifs=$IFS
IFS=,
for request in $requests; do
    IFS=$old_ifs
    backend=${request%%:*}
    prefix=${request#*:}
    [ "$prefix" = "$request" ] && prefix=""
    case "$backend" in
        ''|*[!A-Za-z0-9_.-]*) log "ignoring malformed request '$request' (want BACKEND:PREFIX)"; continue ;;
    esac
    case "$prefix" in
        /*|*..*) log "ignoring prefix '$prefix' of backend $backend (absolute or with ..)"; continue ;;
    esac
    log "warming backend $backend prefix '$prefix'"
    if errors=$(timeout "$TIMEOUT" "$BIN" warm --config "$CONFIG" --backend "$backend" --prefix "$prefix" --log-format json 2>&1 >/dev/null); then
        log "warmed backend $backend prefix '$prefix'"
    else
        status=$?
        log "warming backend $backend prefix '$prefix' did not finish (exit $status: $(printf '%s\n' "$errors" | tail -n 1)); the job reads the rest from the backend"
    fi
done
exit 0
