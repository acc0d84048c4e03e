# The live worker as a container: `docker build -t azureml-events-worker .`
# Build stage: install the worker and its pinned dependencies into a virtual environment.
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY worker ./worker
RUN python -m venv /opt/worker \
 && /opt/worker/bin/pip install --quiet -c constraints.txt . \
 && find /opt/worker -name '__pycache__' -prune -exec rm -rf {} +

# Final stage: the interpreter, the environment and the default rules; no compilers, no test tools.
FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 worker \
 && useradd --system --uid 10001 --gid worker --no-create-home --home-dir /nonexistent worker
COPY --from=build /opt/worker /opt/worker
COPY rules/default.yaml /etc/worker/rules/default.yaml
ENV PATH=/opt/worker/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    WORKER_RULES=/etc/worker/rules \
    WORKER_DEAD_LETTERS=/var/lib/worker/dead-letters \
    WORKER_LOG_FORMAT=json \
    WORKER_HTTP_PORT=8080
RUN mkdir -p /var/lib/worker && chown worker:worker /var/lib/worker
USER 10001:10001
WORKDIR /var/lib/worker
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
# SIGTERM stops the worker cleanly: in-flight actions get WORKER_SHUTDOWN_GRACE seconds.
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "worker"]
CMD ["run"]
