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
# A second SIGTERM or SIGINT (Ctrl-C twice) exits at once, with status 1.
#
# Check a configuration without starting: `docker run --rm -e ... <image> upload-service
# check` (exit 0, or 2 naming every problem).
#
# The root filesystem may be read-only (`--read-only --tmpfs /tmp`): nothing is written
# outside /tmp and STATE_DIR. To have a restarted container delete what a killed one left
# on Discord, keep the journal on a volume:
#   -v upload-state:/var/lib/upload-service -e STATE_DIR=/var/lib/upload-service

# An exact version on Debian 13 (trixie, Debian's stable), pinned by digest too: a rebuild
# gets the same image byte for byte, whatever the tag points to later. The digest is the
# multi-platform index of python:3.11.16-slim-trixie as docker-library/repo-info records it
# (repos/python/remote/3.11.16-slim-trixie.md at commit 33a22f41ac7bf613bc03380b0317536a9a7fb5e8);
# `docker buildx imagetools inspect python:3.11.16-slim-trixie` shows it. Move both on
# deliberately, together. The Python minor (3.11) is the one pyproject.toml's classifiers
# name and the one CI tests with: tests/deploy/test_deploy_image.py fails when they differ.
FROM python:3.11.16-slim-trixie@sha256:be1575ed968de893bd54f4c56315ff7c4736ce522c1bca08fd521731aafc0d76

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

# Built by the setuptools pinned above: in an isolated build environment pip would fetch the
# newest setuptools at every build, whatever constraints.txt says.
COPY pyproject.toml README.md ./
COPY service/ ./service/
RUN pip install --no-deps --no-build-isolation --check-build-dependencies . && pip check

# An unprivileged user, named numerically below (Kubernetes' runAsNonRoot can check a
# number); the installed code stays owned by root. STATE_DIR's usual place is the user's: a
# Docker volume mounted there starts as a copy of it.
RUN useradd --system --no-log-init --uid 10001 --user-group --no-create-home \
        --shell /usr/sbin/nologin app \
    && install --directory --owner=10001 --group=10001 --mode=0700 /var/lib/upload-service
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
