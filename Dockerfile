# hubbub node image (docs/deploy.md "Docker").
# Stage 1 builds the hubbub wheel and the wheels of its dependencies (uvloop and
# hiredis come as manylinux wheels); stage 2 installs only those wheels into a
# virtualenv and copies nothing of the source tree.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY hubbub ./hubbub
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
COPY --from=build /wheels /wheels
RUN python -m venv /opt/hubbub \
 && /opt/hubbub/bin/pip install --no-cache-dir --no-index --find-links=/wheels hubbub \
 && rm -rf /wheels \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin hubbub
COPY configs/hubbub.toml /etc/hubbub/hubbub.toml
# Non-root; the process writes nothing, so the root filesystem can be mounted
# read-only (compose read_only, Kubernetes readOnlyRootFilesystem).
USER 10001:10001
# Inside a container the admin listener must be reachable by probes and Prometheus;
# keep its port off the public network (nginx does not proxy it).
ENV PATH=/opt/hubbub/bin:$PATH \
    HUBBUB_CONFIG=/etc/hubbub/hubbub.toml \
    HUBBUB_ADMIN=0.0.0.0:7402 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
EXPOSE 7400 7401 7402
# SIGTERM drains (PROTOCOL.md §7): give the container longer than drain_timeout
# to stop (compose stop_grace_period, Kubernetes terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:7402/healthz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["hubbub", "serve"]
