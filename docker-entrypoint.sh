#!/bin/sh
# No arguments: run the profile ($CTXRAY_PROFILE, default paper) into /out and render its report.
# Otherwise run the given command (e.g. `pytest claims/`, `ctxray-bench cohorts`).
set -e
if [ "$#" -eq 0 ]; then
    exec ctxray-bench run --profile "${CTXRAY_PROFILE:-paper}" --out /out
fi
exec "$@"
