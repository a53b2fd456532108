#!/usr/bin/env bash
# A rolling deploy of new code already in place (docs/operations.md, "Upgrade"):
# nothing a user or a job is doing is cut off.
#
#   1. check the configuration and apply migrations (with the units' own
#      environment file, as the units' user);
#   2. collect static files;
#   3. restart each Celery worker in turn: SIGTERM is Celery's warm shutdown, so
#      the worker takes no new job and the running one finishes first (the unit's
#      TimeoutStopSec is above JOB_MAX_SECONDS + 60); the others keep taking jobs;
#   4. restart the beat (its Redis lock hands over; a missed tick is sent late);
#   5. restart each daphne in turn, waiting until it answers before the next: its
#      clients are closed with 4001 and reconnect through nginx to the others;
#   6. reload gunicorn (SIGHUP: new workers on the new code, the old ones finish
#      their requests);
#   7. wait until gunicorn answers again.
#
# Run as root on the host: `scripts/deploy.sh` (or `--no-wait-workers` to let the
# workers' warm shutdowns finish in the background: a worker on an hour-long job
# keeps the old code until that job ends). Migrations must work with the code
# still running (add first, remove in a later release): workers finishing a job
# run the old code against the new schema.
set -euo pipefail

APP_DIR=${APP_DIR:-/opt/tasksite}
ENV_FILE=${ENV_FILE:-/etc/tasksite/tasksite.env}
APP_USER=${APP_USER:-tasksite}
WEB_ADDR=${WEB_ADDR:-127.0.0.1:8000}
WAIT_WORKERS=1
if [[ ${1:-} == "--no-wait-workers" ]]; then
    WAIT_WORKERS=0
elif [[ $# -gt 0 ]]; then
    echo "usage: $0 [--no-wait-workers]" >&2
    exit 2
fi

log() { printf '%s deploy: %s\n' "$(date -u +%FT%TZ)" "$*"; }

# manage.py exactly as the units see the world: their user, their environment file
# (systemd's syntax, not the shell's), their working directory.
manage() {
    systemd-run --quiet --wait --pipe --collect \
        --uid="$APP_USER" --gid="$APP_USER" \
        --property=EnvironmentFile="$ENV_FILE" \
        --working-directory="$APP_DIR" \
        "$APP_DIR/.venv/bin/python" manage.py "$@"
}

units() {
    # The instances that are running now, e.g. tasksite-worker@1.service.
    systemctl list-units --type=service --state=active --no-legend --plain "$1" \
        | awk '{print $1}'
}

wait_http() {
    local url=$1 deadline=$((SECONDS + 60))
    until curl --silent --fail --max-time 2 --output /dev/null "$url"; do
        if ((SECONDS > deadline)); then
            log "no answer from $url within 60 s"
            return 1
        fi
        sleep 1
    done
}

log "checking the configuration"
manage check --deploy --fail-level WARNING
log "migrating"
manage migrate --noinput
manage collectstatic --noinput --verbosity 0

for unit in $(units 'tasksite-worker@*'); do
    if ((WAIT_WORKERS)); then
        log "restarting $unit (waits for its running job)"
        systemctl restart "$unit"
    else
        log "restarting $unit in the background"
        systemctl restart --no-block "$unit"
    fi
done

log "restarting the alerts worker"
systemctl restart tasksite-alerts.service

log "restarting the beat"
systemctl restart tasksite-beat.service

for unit in $(units 'tasksite-ws@*'); do
    port=${unit#tasksite-ws@}
    port=${port%.service}
    log "restarting $unit"
    systemctl restart "$unit"
    wait_http "http://127.0.0.1:$port/healthz"
done

log "reloading gunicorn"
systemctl reload tasksite-web.service
wait_http "http://$WEB_ADDR/healthz"
log "done"
