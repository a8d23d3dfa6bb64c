# syntax=docker/dockerfile:1
# The touchpoint image: every touchpoint service (init, worker, simulator, dashboard) runs it.
#
#   docker build -t touchpoint:0.1.0 .        (docker compose build does the same)
#
# Stage 1 builds wheels for the project and its dependencies (with a compiler at hand for
# any dependency without a wheel) and installs them into a virtual env; stage 2 copies only
# that env onto a slim base and runs as a non-root user. The embedded extras (chDB, Tansu)
# are left out: in production Kafka and ClickHouse are real servers
# (TOUCHPOINT_EMBEDDED_BROKER=false, TOUCHPOINT_EMBEDDED_CLICKHOUSE=false).

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# --- builder ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src

# Dependencies first (cached while only the code changes): wheels for everything the
# project needs, built from pyproject.toml alone.
COPY pyproject.toml README.md ./
RUN mkdir -p pipeline schemas && touch pipeline/__init__.py schemas/__init__.py \
    && pip wheel --wheel-dir /wheels . \
    && rm -f /wheels/touchpoint-*.whl

# Then the project's own wheel.
COPY pipeline ./pipeline
COPY schemas ./schemas
RUN pip wheel --no-deps --wheel-dir /wheels .

RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-index --find-links /wheels touchpoint \
    && /opt/venv/bin/touchpoint --help >/dev/null

# --- runtime ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="touchpoint" \
      org.opencontainers.image.description="Event-streaming customer-journey analytics: Kafka -> faust -> ClickHouse" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 touchpoint \
    && useradd --system --uid 10001 --gid touchpoint --home-dir /var/lib/touchpoint \
       --shell /usr/sbin/nologin touchpoint \
    && install -d -o touchpoint -g touchpoint -m 0750 /var/lib/touchpoint

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TOUCHPOINT_DATA_DIR=/var/lib/touchpoint \
    TOUCHPOINT_EMBEDDED_BROKER=false \
    TOUCHPOINT_EMBEDDED_CLICKHOUSE=false

USER 10001:10001
WORKDIR /var/lib/touchpoint

# worker /metrics and /healthz, dashboard, HTTP collector
EXPOSE 6066 8080 8088

CMD ["touchpoint", "--help"]
