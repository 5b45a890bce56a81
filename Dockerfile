# ctxray-bench in a container. Usage:
#   docker run -v "$PWD/out:/out" ctxray-bench                  the paper profile: store and report.html in /out
#   docker run -v "$PWD/out:/out" ctxray-bench claims --results /out
#                                                               the claim tests on that store (pytest's exit code)
#   docker run ctxray-bench --help                              any ctxray-bench option or sub-command, e.g.
#   docker run ctxray-bench run --help                          `run --profile smoke --out /out`
#   docker run ctxray-bench sh -c '...'                         any other command runs as given
# The container runs as uid 1000: /out must be writable for it. -e CTXRAY_PROFILE=smoke runs the small
# profile; relative paths are taken from /out.
#
# Build arguments:
#   TORCH_INDEX_URL  package index for torch/torchvision (default: PyPI, a CUDA build that also runs
#                    on CPU); e.g. https://download.pytorch.org/whl/cpu for a CPU-only image
#   FETCH_DATA       1 (default): clone the dataset at DATA_REF during the build; 0: mount it at run
#                    time instead (-v /path/to/covid-chestxray-dataset:/data:ro -e CTXRAY_DATA=/data)
#   DATA_REF         the upstream commit to fetch
FROM python:3.11-slim

ARG TORCH_INDEX_URL=""
ARG FETCH_DATA=1
ARG DATA_REF=6a4242344473ccb5ed0d2148d8c7bfb1691e4ed8

# CTXRAY_CONTAINER: errors about missing data say how to mount it into the container.
# CTXRAY_CLAIMS_OUT: `claims` without --results runs the paper profile into /out first.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    CTXRAY_CONTAINER=1 \
    CTXRAY_HOME=/opt/ctxray \
    CTXRAY_CACHE=/tmp/ctxray-cache \
    CTXRAY_CLAIMS_OUT=/out \
    MPLCONFIGDIR=/tmp/matplotlib \
    PYTEST_ADDOPTS="-p no:cacheprovider"

# git fetches the dataset; nothing else is needed from Debian.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# torch first, in its own layer: it is by far the largest download and changes least often.
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install --no-cache-dir torch==2.14.1 torchvision==0.29.1 --index-url "$TORCH_INDEX_URL"; \
    else \
        pip install --no-cache-dir torch==2.14.1 torchvision==0.29.1; \
    fi

# The package is installed as a user installs it (not editable, no test extras); the claim tests and
# report templates ship inside it, so the sources are only needed while installing.
COPY pyproject.toml README.md /tmp/src/
COPY benchmark /tmp/src/benchmark
COPY templates /tmp/src/templates
COPY claims /tmp/src/claims
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN pip install --no-cache-dir /tmp/src \
    && rm -rf /tmp/src \
    && useradd --create-home --uid 1000 ctxray \
    && mkdir -p /out /opt/ctxray \
    && chown ctxray:ctxray /out /opt/ctxray

USER 1000:1000
WORKDIR /out
RUN if [ "$FETCH_DATA" = "1" ]; then ctxray-bench data fetch --ref "$DATA_REF"; fi

VOLUME ["/out"]
ENTRYPOINT ["docker-entrypoint.sh"]
