# discord-cloud's upload service.
#
# Build:  docker build -t discord-cloud-upload-service .
# Run:    docker run -p 8080:8080 \
#           -e MANAGER_ADDRESS=wss://manager.example.com/ \
#           -e SERVICE_PASSWORD=... \
#           -e OWN_ADDRESS=https://upload.example.com/upload \
#           discord-cloud-upload-service
#
# Configure with environment variables (see config.example.toml for every setting), or
# mount a TOML file and override CMD: ["upload-service", "run", "--config", "/config.toml"].
# PORT is set below, and the environment wins over the file, so change the port with
# `-e PORT=...`, not in the file.
#
# On SIGTERM the service lets chunks in flight finish for up to SHUTDOWN_GRACE seconds
# (default 30), so stop it with a longer timeout than Docker's 10 s: `docker stop -t 40`.
#
# The root filesystem may be read-only (`--read-only --tmpfs /tmp`): nothing is written
# outside /tmp.

# An exact version: a rebuild gets the same Python. Move it on deliberately.
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app

# The dependencies first, in their own layer, exactly as pinned (constraints.txt, which CI
# keeps in step with pyproject.toml): a code change rebuilds only the layers below. Without
# their own dependencies, so that `pip check` proves the pins complete.
COPY constraints.txt ./
RUN pip install --no-deps --requirement constraints.txt

COPY pyproject.toml README.md ./
COPY service/ ./service/
RUN pip install --no-deps . && pip check

# An unprivileged user, named numerically below (Kubernetes' runAsNonRoot can check a
# number); the installed code stays owned by root.
RUN useradd --system --no-log-init --uid 10001 --user-group --no-create-home \
        --shell /usr/sbin/nologin app
USER 10001:10001

ENV PORT=8080 \
    METRICS_PORT=9102
# The chunk port, and /metrics for Prometheus (keep this one off the public network).
EXPOSE 8080 9102

# The container's PORT at run time; stdlib only. urlopen raises (exit status 1) on a refused
# connection, a timeout or a non-2xx status.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['PORT'], timeout=4)"]

CMD ["upload-service", "run"]
