# Code4me Serve image: the Ray Serve application with the default model, talking to
# external PostgreSQL (with pgvector) and Redis.
#
#   docker build -t code4me-serve .                                   # CPU
#   docker build -t code4me-serve:gpu \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .   # GPU (CUDA build)
#
#   docker run --shm-size=2g -p 8000:8000 -p 8265:8265 \
#     -e DATABASE_URL=postgresql://USER:PASSWORD@HOST:5432/code4me \
#     -e REDIS_URL=redis://HOST:6379/0 \
#     -e ENVIRONMENT=production -e SECRET_KEY=AT_LEAST_32_RANDOM_CHARACTERS \
#     -e ENCRYPTION_KEYS=ID:BASE64_OF_32_RANDOM_BYTES code4me-serve     # `code4me keygen ID` prints one
#
# For a GPU image also pass `--gpus all` (NVIDIA container toolkit on the host).

FROM python:3.11-slim

# Wheel index for torch: the CPU build by default; a CUDA index (cu128, ...) for GPU images.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch first, in its own layer, pinned to the version in pyproject.toml; `pip install -e .`
# below then finds torch==2.13.0 already satisfied instead of choosing a build itself.
RUN pip install torch==2.13.0 --index-url "${TORCH_INDEX_URL}"

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin code4me
WORKDIR /app

# The repository, including models/code4me-tiny and configs/ (see .dockerignore).
# Editable install: relative model paths in configs resolve against this directory.
COPY --chown=code4me:code4me . /app
RUN pip install -e .

USER code4me
# Writable state (mail outbox when SMTP is not configured, ...) lives outside the source tree.
# FORWARDED_ALLOW_IPS empty: the Serve proxy must not rewrite the client address from X-Forwarded-For;
# the app decides which forwarded addresses to believe (TRUSTED_PROXIES, app/infra/client_address.py).
ENV HOME=/home/code4me \
    CODE4ME_DATA_DIR=/home/code4me/data \
    FORWARDED_ALLOW_IPS=""
RUN mkdir -p /home/code4me/data

# 8000: the Serve HTTP proxy (API and WebSocket); 8265: the Ray dashboard.
EXPOSE 8000 8265

HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/api/ping', timeout=4)" || exit 1

# Expects DATABASE_URL and REDIS_URL (external services) in the environment; the embedded
# PostgreSQL/Redis extra is not installed. --host 0.0.0.0: configs/local.yaml binds the
# loopback address, which a container's published ports cannot reach.
CMD ["code4me", "up", "--host", "0.0.0.0"]
