# syntax=docker/dockerfile:1
# DumbKV server image: a wheel built in one stage, installed in a slim runtime.
#   docker build -t dumbkv .
#   docker run --rm -p 7379:7379 -p 7380:7380 -v dumbkv-data:/data dumbkv
# Configure it with DUMBKV_* environment variables (README "Configuration").

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# A C compiler: setup.py compiles the request path (mypyc); the runtime stage needs none.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY src ./src
# The DumbKV wheel (compiled) and a wheel of every dependency, so the runtime stage needs no
# index.
RUN python -m pip wheel --wheel-dir /wheels .

FROM python:3.11-slim AS runtime
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 dumbkv \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /data \
       --shell /usr/sbin/nologin dumbkv \
    && mkdir -p /data \
    && chown 10001:10001 /data
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-index --find-links /wheels dumbkv
# Listen on every interface; keep the SQLite file and the availability ledger on /data.
ENV DUMBKV_HOST=0.0.0.0 \
    DUMBKV_ADMIN_HOST=0.0.0.0 \
    DUMBKV_STORE=sqlite:////data/dumbkv.db \
    DUMBKV_DATA_DIR=/data
VOLUME ["/data"]
WORKDIR /data
# 7379: RESP (Redis protocol); 7380: admin HTTP (/health, /ready, /metrics).
EXPOSE 7379 7380
USER 10001:10001
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:%s/health' % (os.environ.get('DUMBKV_ADMIN_PORT') or '7380'), timeout=4)"]
CMD ["dumbkv", "serve"]
