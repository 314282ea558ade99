# syntax=docker/dockerfile:1
#
# aggbook service image.
#
#   docker build -t aggbook .
#   docker run --rm -p 8080:8080 -v "$PWD/deploy/config.example.toml:/etc/aggbook/config.toml:ro" aggbook
#
# Two stages: the build stage installs the package and its dependencies into a virtualenv
# (every dependency ships binary wheels, so no compiler is needed even there); the runtime
# stage is a fresh slim Python with only that virtualenv copied in: no pip cache, no source
# tree, no build tools.  Both stages use the same base image, so the virtualenv's interpreter
# path stays valid after the copy.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/aggbook
WORKDIR /src
# .dockerignore admits only what the package is built from.
COPY pyproject.toml README.md __init__.py ./
COPY book/ book/
COPY client/ client/
COPY feeds/ feeds/
COPY proto/ proto/
COPY service/ service/
COPY simulator/ simulator/
# pip and setuptools (which `python -m venv` puts in the virtualenv) are only needed to
# install: removing them keeps packaging tools out of the runtime image, and the smoke test
# after it shows the service does not need them.
RUN /opt/aggbook/bin/pip install . \
 && /opt/aggbook/bin/python -m pip uninstall --yes pip setuptools \
 && /opt/aggbook/bin/aggbook --help >/dev/null

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="aggbook" \
      org.opencontainers.image.description="Order-book aggregation service: per-venue L2 books merged into a consolidated view"
RUN groupadd --system --gid 10001 aggbook \
 && useradd --system --uid 10001 --gid aggbook --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin aggbook
COPY --from=build /opt/aggbook /opt/aggbook
# AGGBOOK_HOST/AGGBOOK_PORT override the config's listen address: inside a container the
# service must listen on every interface, whatever the mounted config says.
ENV PATH=/opt/aggbook/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    AGGBOOK_HOST=0.0.0.0 \
    AGGBOOK_PORT=8080
USER 10001:10001
EXPOSE 8080
# Liveness only (/healthz): a process whose venues are all down is still healthy, just not
# ready (/readyz), and restarting it would not bring the venues back.  No curl in a slim
# image, so the probe is the interpreter that is there anyway.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('AGGBOOK_PORT', '8080'), timeout=2)"]
# The config is mounted here (a file, a ConfigMap, a secret): see deploy/.
ENTRYPOINT ["aggbook"]
CMD ["serve", "--config", "/etc/aggbook/config.toml"]
