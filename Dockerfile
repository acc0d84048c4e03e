# The live worker as a container: `docker build -t azureml-events-worker .`
# Build stage: install the worker and its pinned dependencies into a virtual environment, compiled.
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY worker ./worker
# The bytecode is written here, once, instead of at every start: the running image cannot write it
# (read-only root) and would compile every module in both of its processes each time (2-3 s).
# unchecked-hash: the files never change in the image, so Python need not compare them with the sources.
# The environment keeps no installer: pip and setuptools leave it once it is made. Traces (the
# tracing extra) are in: they load only when the standard OTEL_* variables turn them on.
RUN python -m venv /opt/worker \
 && /opt/worker/bin/python -m pip install --quiet --no-compile -c constraints.txt ".[tracing]" \
 && /opt/worker/bin/python -m pip uninstall --quiet --yes pip setuptools \
 && python -m compileall -q -j0 --invalidation-mode unchecked-hash /opt/worker/lib

# Final stage: the interpreter, the environment and the default rules; no compilers, no installers.
FROM python:3.11-slim-bookworm
# The interpreter's own pip, setuptools and wheel go (nothing is installed at run time), and its standard
# library is compiled: the official image ships it without bytecode.
RUN if python -c 'import pip' 2>/dev/null; then \
      python -m pip uninstall --quiet --yes pip setuptools wheel && find /usr/local/bin -xtype l -delete; \
    fi \
 && python -m compileall -q -j0 --invalidation-mode unchecked-hash \
      -x '/(idlelib|tkinter|turtledemo|lib2to3|ensurepip|test|tests)/' \
      "$(python -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')" \
 && groupadd --system --gid 10001 worker \
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
# On the port the worker serves: WORKER_HTTP_PORT, as the container is run (0 turns the server off:
# run such a container with --no-healthcheck).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request as r; r.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('WORKER_HTTP_PORT', '8080'), timeout=4)"]
# SIGTERM stops the worker cleanly: in-flight actions get WORKER_SHUTDOWN_GRACE seconds.
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "worker"]
CMD ["run"]
