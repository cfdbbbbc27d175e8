#!/bin/sh
# Slurm Epilog (slurm.conf: Epilog=/etc/slurm/epilog.d/warpdrive.sh): after a job, make sure
# the next one finds a working tree. A mount that no longer answers (its daemon died and left
# "Transport endpoint is not connected") is restarted through systemd; the daemon clears the
# stale mount itself at start. The block cache is kept: the next job on the same data starts
# warm. Never fails (an epilog failure drains the node); findings go to syslog.
set -u
CONFIG="${WARPDRIVE_CONFIG:-/etc/warpdrive/warpdrive.yaml}"
UNIT="${WD_UNIT:-warpdrive-mount.service}"

log() { logger -t warpdrive-epilog -- "job ${SLURM_JOB_ID:-?}: $*" 2>/dev/null || echo "warpdrive-epilog: $*" >&2; }

mount_point=$(sed -n 's/^mount_point:[[:space:]]*\([^#[:space:]]*\).*/\1/p' "$CONFIG" 2>/dev/null | head -n 1)
[ -n "$mount_point" ] || { log "no mount_point in $CONFIG"; exit 0; }
if timeout 10 stat -t "$mount_point/." >/dev/null 2>&1 && mountpoint -q "$mount_point"; then
    exit 0
fi
log "$mount_point does not answer; restarting $UNIT"
systemctl restart "$UNIT" >/dev/null 2>&1 || log "systemctl restart $UNIT failed"
exit 0
