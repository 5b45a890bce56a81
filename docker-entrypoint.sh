#!/bin/sh
# No arguments: run the profile ($CTXRAY_PROFILE, default paper) into /out and render its report.
# An option (`--help`, `--version`) or a sub-command of ctxray-bench (`run --help`, `claims --results /out`):
# handed to ctxray-bench. Anything else is run as given (`pytest ...`, `sh -c ...`).
set -e

# The sub-commands of ctxray-bench; tests/test_container_files.py checks this list against the CLI's parser.
SUBCOMMANDS="cohorts train run plan power gate-chance synthetic data report claims"

if [ "$#" -eq 0 ]; then
    exec ctxray-bench run --profile "${CTXRAY_PROFILE:-paper}" --out /out
fi
case "$1" in
    -*) exec ctxray-bench "$@" ;;
esac
for subcommand in $SUBCOMMANDS; do
    if [ "$1" = "$subcommand" ]; then
        exec ctxray-bench "$@"
    fi
done
exec "$@"
