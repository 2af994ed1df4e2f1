# syntax=docker/dockerfile:1
# imagine-bot: `docker compose up -d` (see README, "Running in Docker").
#
# Two stages: the build stage installs the dependencies and the bot into a
# virtual environment; the runtime stage copies only that environment into a
# slim image and runs it as an unprivileged user. The root filesystem can be
# read-only: the bot writes only to /data (its SQLite database and WAL).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, from pyproject.toml alone, so a code change does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > requirements.txt \
    && pip install -r requirements.txt
COPY README.md ./
COPY bot ./bot
COPY cogs ./cogs
COPY storage ./storage
RUN pip install --no-deps . \
    && python -m compileall -q /opt/venv

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="imagine-bot" \
      org.opencontainers.image.description="A Discord /imagine bot backed by RunComfy"
RUN groupadd --system --gid 10001 bot \
    && useradd --system --uid 10001 --gid bot --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin bot \
    && mkdir /data /app \
    && chown bot:bot /data
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LANG=C.UTF-8 \
    TMPDIR=/data \
    DATABASE_PATH=/data/imagine.sqlite3 \
    HEALTH_HOST=127.0.0.1 \
    HEALTH_PORT=8080
# An empty, read-only working directory: `python -m` puts it first on sys.path.
WORKDIR /app
USER 10001:10001
VOLUME ["/data"]
# Asks the running bot, not just "is the process there": gateway, database, scheduler.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-m", "bot", "health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "bot"]
CMD ["run"]
