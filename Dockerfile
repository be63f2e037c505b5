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
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# An unprivileged user to run the service; the installed code stays owned by root.
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin app

WORKDIR /app
COPY pyproject.toml README.md ./
COPY service/ ./service/
RUN pip install --no-cache-dir .

USER app

ENV PORT=8080
EXPOSE 8080

# Shell form so that ${PORT} is the container's value at run time; stdlib only.
# urlopen raises (exit status 1) on a refused connection, a timeout or a non-2xx status.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:${PORT}/healthz', timeout=4)"

CMD ["upload-service", "run"]
