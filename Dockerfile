# cxpulse worker image: `docker build -t cxpulse .`, run `cxpulse worker`.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CXPULSE_DATA_DIR=/var/lib/cxpulse \
    CXPULSE_WEB_HOST=0.0.0.0 \
    CXPULSE_WEB_PORT=6066

WORKDIR /app

# Dependencies first (pinned in pyproject.toml), so code changes reuse this layer.
COPY pyproject.toml README.md* ./
RUN test -f README.md || echo "# cxpulse" > README.md \
 && mkdir -p pipeline schemas agents \
 && touch pipeline/__init__.py schemas/__init__.py agents/__init__.py \
 && pip install . \
 && pip uninstall -y cxpulse \
 && rm -rf pipeline schemas agents build *.egg-info

COPY pipeline ./pipeline
COPY schemas ./schemas
COPY agents ./agents
COPY deploy/clickhouse ./deploy/clickhouse
# Editable install: pipeline/adapters/clickhouse/migrations.py finds deploy/clickhouse next to
# the package (/app), as in a checkout.
RUN pip install --no-deps -e . \
 && useradd --system --uid 10001 --home-dir /var/lib/cxpulse --create-home cxpulse \
 && chown -R cxpulse /var/lib/cxpulse

USER cxpulse
EXPOSE 6066
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=5 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:6066/healthz', timeout=3).status == 200 else 1)"
CMD ["cxpulse", "worker"]
