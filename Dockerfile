# hubbub node image: slim Python 3.11, uvloop + hiredis wheels, non-root.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY hubbub ./hubbub
RUN pip install --no-cache-dir --upgrade pip \
 && pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home hubbub
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY configs/hubbub.toml /etc/hubbub/hubbub.toml
USER hubbub
# Inside a container the admin listener must be reachable by probes and Prometheus.
ENV HUBBUB_CONFIG=/etc/hubbub/hubbub.toml \
    HUBBUB_ADMIN=0.0.0.0:7402 \
    PYTHONUNBUFFERED=1
EXPOSE 7400 7401 7402
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:7402/healthz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["hubbub", "serve"]
