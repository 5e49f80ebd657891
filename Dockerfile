# Serving image for `cxml serve`: the package with its `serve` extra, CPU torch, run as a non-root user.
# `cxml redeploy --mode docker` runs it on the host with the release bundle mounted read-only:
#   docker build -t cxml-serve:latest .
#   docker run -p 127.0.0.1:8000:8000 -v /srv/cxml/releases/<release>:/srv/release:ro cxml-serve:latest
# BASE_IMAGE may name a locally made image (hosts without a registry); PIP_OPTIONS can then make
# the install offline, e.g. "--no-index --no-build-isolation" on a base that already has the dependencies.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_OPTIONS=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/cxml
COPY pyproject.toml README.md ./
COPY .ci/constraints.txt ./constraints.txt
COPY src ./src

# The package itself is this checkout; its dependencies are pinned by constraints.txt / pyproject ranges.
# hadolint ignore=DL3013,SC2086
RUN python -m pip install ${PIP_OPTIONS} --constraint constraints.txt --extra-index-url "${TORCH_INDEX_URL}" ".[serve]" \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin cxml

USER 10001
EXPOSE 8000

HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]

ENTRYPOINT ["python", "-m", "cxml.serve"]
CMD ["--bundle", "/srv/release", "--host", "0.0.0.0", "--port", "8000"]
