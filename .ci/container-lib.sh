# Shell functions for .ci/container-test; source it from bash.
#
# container_run ARGS...: `docker run ARGS...` that returns the exit status of the command inside the
# container. Through the docker client on podman (4.3 here), `docker run --rm` exits 0 whatever the
# command inside exits with, so a failing step would pass. The container is therefore run without
# --rm under a unique name, its status read with `docker wait` (which also waits should the client
# have returned early; when that comes back empty, as it once did under load, from `docker inspect`),
# and the container removed. Do not pass --rm: the status could not be read,
# and the call fails. stdout and stderr are the container's.
# Returns: the container's exit status; the client's status when that is non-zero and the
# container's is 0 or cannot be read; 125 when neither says anything.

CONTAINER_RUN_COUNT=0

container_run() {
    CONTAINER_RUN_COUNT=$((CONTAINER_RUN_COUNT + 1))
    local name="ctxray-ci-${BASHPID}-${CONTAINER_RUN_COUNT}-${RANDOM}"
    local client=0 status=""
    docker run --name "$name" "$@" || client=$?
    status="$(docker wait "$name" 2>/dev/null)" || status=""
    if ! [[ "$status" =~ ^[0-9]+$ ]]; then  # podman's wait can come back empty under load: ask once more
        sleep 1
        status="$(docker inspect --format '{{.State.ExitCode}}' "$name" 2>/dev/null)" || status=""
    fi
    docker rm -f "$name" >/dev/null 2>&1 || true
    if ! [[ "$status" =~ ^[0-9]+$ ]]; then
        echo "container_run: could not read the exit status of container $name (docker run exited $client)" >&2
        if [ "$client" -ne 0 ]; then return "$client"; fi
        return 125
    fi
    if [ "$status" -eq 0 ] && [ "$client" -ne 0 ]; then return "$client"; fi
    return "$status"
}
