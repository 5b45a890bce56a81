# ctxray-bench: `docker run -v "$PWD/out:/out" ctxray-bench` runs the paper profile and writes the
# results store and report to /out; `docker run ctxray-bench pytest claims/` runs the claim tests.
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

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
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

WORKDIR /app
COPY pyproject.toml README.md ./
COPY benchmark ./benchmark
COPY templates ./templates
COPY claims ./claims
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN pip install --no-cache-dir -e ".[test]" \
    && useradd --create-home --uid 1000 ctxray \
    && mkdir -p /out /opt/ctxray \
    && chown ctxray:ctxray /out /opt/ctxray

USER 1000:1000
RUN if [ "$FETCH_DATA" = "1" ]; then ctxray-bench data fetch --ref "$DATA_REF"; fi

VOLUME ["/out"]
ENTRYPOINT ["docker-entrypoint.sh"]
