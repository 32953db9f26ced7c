# ft-exporter container image.
#
#   docker build -t ft-exporter .
#   docker run --rm -p 127.0.0.1:11550:11550 ft-exporter --demo
#
# Two stages: the first builds the wheel and a virtualenv holding only the exporter and its
# runtime dependencies; the second copies that virtualenv onto the same pinned slim Python
# image, so no wheel, pip cache or build dependency reaches the final image.

# One pinned base for both stages: the virtualenv's interpreter path must be the same in each.
ARG PYTHON_IMAGE=python:3.13.5-slim-bookworm
# Must equal ft_exporter.__version__ (the build fails otherwise); used for the image label.
# scripts/sync_deploy.py keeps it, and EXPOSE below, in step with the package.
ARG VERSION=0.1.0
# The git commit built, for --version, build_info and the image label; "unknown" without:
#   docker build --build-arg REVISION="$(git rev-parse HEAD)" -t ft-exporter .
ARG REVISION=""

FROM ${PYTHON_IMAGE} AS build
ARG VERSION
ARG REVISION
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY ft_exporter/ ft_exporter/
# The wheels of the exporter and its dependencies, then a pip-less virtualenv built from them
# with no index access. The wheel's name proves the label version is the package version;
# setup.py stamps REVISION into the wheel (the context has no .git to read it from).
RUN FT_EXPORTER_REVISION="${REVISION}" pip wheel --no-cache-dir --wheel-dir /wheels . \
    && test -f "/wheels/ft_exporter-${VERSION}-py3-none-any.whl" \
    && python -m venv --without-pip /opt/ft-exporter \
    && pip --python /opt/ft-exporter/bin/python install --no-cache-dir --no-index \
        --find-links /wheels "ft-exporter==${VERSION}"

FROM ${PYTHON_IMAGE}
ARG VERSION
ARG REVISION
# The repository URL is known to whoever builds: docker build --build-arg SOURCE_URL=... .
ARG SOURCE_URL=""
LABEL org.opencontainers.image.title="ft-exporter" \
      org.opencontainers.image.description="Prometheus exporter for Alibaba Cloud Model Studio (DashScope) fine-tune jobs" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="${SOURCE_URL}"
COPY --from=build /opt/ft-exporter /opt/ft-exporter
ENV PATH="/opt/ft-exporter/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Numeric so that Kubernetes' runAsNonRoot can verify it; no home directory or shell needed.
USER 65532:65532
EXPOSE 11550
# Reads the port from FT_EXPORTER_WEB_LISTEN_ADDRESS like the exporter does; the key is given
# by DASHSCOPE_API_KEY or a mounted file named by FT_EXPORTER_DASHSCOPE_API_KEY_FILE.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; from ft_exporter.config import DEFAULT_PORT, parse_listen_address; _, port = parse_listen_address(os.environ.get('FT_EXPORTER_WEB_LISTEN_ADDRESS', f':{DEFAULT_PORT}')); urllib.request.urlopen(f'http://127.0.0.1:{port}/-/healthy', timeout=4)"]
ENTRYPOINT ["ft-exporter"]
