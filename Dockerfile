# syntax=docker/dockerfile:1
#
# Images of the skeleton-based action recognition service. Build targets:
#
#   service      (default, last stage) GPU inference service: CUDA 13 + cuDNN 9 runtime base, the
#                TensorRT 10 runtime libraries, onnxruntime-gpu, MediaPipe, FastAPI. No torch.
#   service-cpu  the same service on plain Ubuntu, for hosts without an NVIDIA GPU.
#   export       torch + TensorRT: `python -m export ...`, builds TensorRT engines for the host's GPU.
#   bench        the export image + the benchmark harness: `python -m bench` with the GPU rows.
#
# onnxruntime-gpu 1.31.x (PyPI) is built with CUDA 13.0 and cuDNN 9 and its TensorRT provider links
# TensorRT 10 (libnvinfer.so.10), so the GPU base is CUDA 13.0 + cuDNN 9 (host driver >= 580).
#
# Every Python package version comes from requirements/constraints.txt, through the `-c` line of the
# requirements/*.txt files installed here: this file pins base images only. See docs/deployment.md.

ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04
ARG BASE_IMAGE=ubuntu:24.04
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.12.20
# CPython from python-build-standalone (relocatable, any glibc >= 2.17): Ubuntu 24.04 ships 3.12.
ARG PYTHON_VERSION=3.11

FROM ${UV_IMAGE} AS uv

# --------------------------------------------------------------------------- build stages

# CPython 3.11 under /opt/python and an empty virtual environment /opt/venv that uses it.
FROM ${BASE_IMAGE} AS python
ARG PYTHON_VERSION
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PYTHON_PREFERENCE=only-managed \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=uv /uv /usr/local/bin/uv
RUN uv python install "${PYTHON_VERSION}" \
    && "$(uv python find "${PYTHON_VERSION}")" -m venv /opt/venv
WORKDIR /build

# Runtime of the service (requirements/service.txt: no torch).
FROM python AS venv-service
COPY requirements/constraints.txt requirements/service.txt requirements/
RUN /opt/venv/bin/pip install -r requirements/service.txt \
    && /opt/venv/bin/pip check

# + TensorRT runtime libraries, for ONNX Runtime's TensorrtExecutionProvider. --no-deps: the CUDA
# runtime they need comes with the CUDA base image, and every version stays in constraints.txt.
FROM venv-service AS venv-gpu
COPY requirements/tensorrt.txt requirements/
RUN /opt/venv/bin/pip install --no-deps -r requirements/tensorrt.txt

# + torch, ONNX and the training stack (requirements/train.txt), for the export image.
FROM venv-gpu AS venv-export
COPY requirements/train.txt requirements/
RUN /opt/venv/bin/pip install -r requirements/train.txt

# --------------------------------------------------------------------------- runtime stages

# The export tool (torch + TensorRT). Same user, paths and shipped models as the service image, so
# it can fill the shared models volume: docker compose run --rm export
FROM ${CUDA_IMAGE} AS export
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0t64 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 skelact \
    && useradd --system --uid 10001 --gid skelact --create-home --shell /usr/sbin/nologin skelact \
    && install -d -o skelact -g skelact /app /models /var/cache/skelact /var/lib/skelact/action-sets
COPY --from=python /opt/python /opt/python
COPY --from=venv-export /opt/venv /opt/venv
# TensorRT's shared libraries (pip wheel) on the loader path, for libonnxruntime_providers_tensorrt.so.
RUN echo /opt/venv/lib/python3.*/site-packages/tensorrt_libs > /etc/ld.so.conf.d/tensorrt.conf \
    && ldconfig
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SKELACT_MODELS_DIR=/models \
    SKELACT_CACHE_DIR=/var/cache/skelact
WORKDIR /app
COPY --chown=10001:10001 skeleton/ /app/skeleton/
COPY --chown=10001:10001 perception/ /app/perception/
COPY --chown=10001:10001 models/ /app/models/
COPY --chown=10001:10001 training/ /app/training/
COPY --chown=10001:10001 export/ /app/export/
COPY --chown=10001:10001 service/ /app/service/
COPY --chown=10001:10001 model_zoo/ /models/
USER 10001:10001
ENTRYPOINT ["python", "-m", "export"]
CMD ["tensorrt", "--models-dir", "/models"]

# The benchmark harness on a GPU host (docs/deployment.md, section 9): the export image (torch on
# CUDA, TensorRT, onnxruntime-gpu, the service) + bench/ and its HTTP / WebSocket clients. Real clips
# come from a mounted data folder, results go to a mounted one: docker compose run --rm bench
FROM export AS bench
USER 0
COPY requirements/constraints.txt requirements/service.txt requirements/train.txt requirements/bench.txt requirements/
RUN /opt/venv/bin/pip install -r requirements/bench.txt \
    && /opt/venv/bin/pip check \
    && rm -rf requirements
ENV SKELACT_DATA_DIR=/data \
    SKELACT_BENCH_OUT=/results \
    MPLCONFIGDIR=/tmp/matplotlib
COPY --chown=10001:10001 configs/ /app/configs/
COPY --chown=10001:10001 bench/ /app/bench/
USER 10001:10001
ENTRYPOINT ["python", "-m", "bench"]
CMD []

# The service without a GPU: ONNX Runtime's CPU provider.
FROM ${BASE_IMAGE} AS service-cpu
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0t64 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 skelact \
    && useradd --system --uid 10001 --gid skelact --create-home --shell /usr/sbin/nologin skelact \
    && install -d -o skelact -g skelact /app /models /var/cache/skelact /var/lib/skelact/action-sets
COPY --from=python /opt/python /opt/python
COPY --from=venv-service /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SKELACT_HOST=0.0.0.0 \
    SKELACT_PORT=8000 \
    SKELACT_MODELS_DIR=/models \
    SKELACT_CACHE_DIR=/var/cache/skelact \
    SKELACT_PROVIDERS=cpu
WORKDIR /app
COPY --chown=10001:10001 deploy/healthcheck.py /app/deploy/healthcheck.py
COPY --chown=10001:10001 skeleton/ /app/skeleton/
COPY --chown=10001:10001 perception/ /app/perception/
COPY --chown=10001:10001 service/ /app/service/
COPY --chown=10001:10001 model_zoo/ /models/
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "/app/deploy/healthcheck.py", "/health/ready"]
ENTRYPOINT ["python", "-m", "service"]
CMD ["serve"]

# The GPU service (default target).
FROM ${CUDA_IMAGE} AS service
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0t64 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 skelact \
    && useradd --system --uid 10001 --gid skelact --create-home --shell /usr/sbin/nologin skelact \
    && install -d -o skelact -g skelact /app /models /var/cache/skelact /var/lib/skelact/action-sets
COPY --from=python /opt/python /opt/python
COPY --from=venv-gpu /opt/venv /opt/venv
# TensorRT's shared libraries (pip wheel) on the loader path, for libonnxruntime_providers_tensorrt.so.
RUN echo /opt/venv/lib/python3.*/site-packages/tensorrt_libs > /etc/ld.so.conf.d/tensorrt.conf \
    && ldconfig
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SKELACT_HOST=0.0.0.0 \
    SKELACT_PORT=8000 \
    SKELACT_MODELS_DIR=/models \
    SKELACT_CACHE_DIR=/var/cache/skelact
WORKDIR /app
COPY --chown=10001:10001 deploy/healthcheck.py /app/deploy/healthcheck.py
COPY --chown=10001:10001 skeleton/ /app/skeleton/
COPY --chown=10001:10001 perception/ /app/perception/
COPY --chown=10001:10001 service/ /app/service/
COPY --chown=10001:10001 model_zoo/ /models/
USER 10001:10001
EXPOSE 8000
# Generous start period: the first start on a GPU may build TensorRT engines (minutes).
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "/app/deploy/healthcheck.py", "/health/ready"]
ENTRYPOINT ["python", "-m", "service"]
CMD ["serve"]
