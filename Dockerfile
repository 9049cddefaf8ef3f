# syntax=docker/dockerfile:1.7
# Refrain's image: one build, three stages (docs/deploy.md).
#   build    uv installs the locked environment; torch is the CPU wheel the lock pins (2.13.0+cpu,
#            from the wheel folder given as the "wheels" build context), or with
#            --build-arg TORCH_CUDA=cu128 the CUDA build of the same version (deploy/install_cuda_torch.sh)
#   runtime  python 3.11 slim, the environment and code, static files collected, a non-root user;
#            the entrypoint runs gunicorn ("web"), a Celery worker ("worker"), beat ("beat"),
#            migrations ("migrate") or any command
#   proxy    nginx with deploy/nginx.conf and the same build's static files
# Build: docker build --build-context wheels=/opt/wheels -t refrain .
#        docker build --build-context wheels=/opt/wheels --target proxy -t refrain-proxy .
# (compose.yaml passes the same context and targets.)

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG NGINX_IMAGE=nginx:1.27-alpine

FROM ${PYTHON_IMAGE} AS build
# The Makefile's uv (UV_VERSION there).
ARG UV_VERSION=0.13.8
# Empty: the CPU torch of uv.lock. A CUDA tag (cu126, cu128, ...): that build of the same version.
ARG TORCH_CUDA=
ENV UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    NUMBA_CACHE_DIR=/app/var/numba
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /app
COPY pyproject.toml uv.lock ./
# uv.lock resolves torch from the local wheel folder /opt/wheels (pyproject's find-links): bind the
# "wheels" build context there, so the image gets exactly the locked CPU wheel, hash-checked.
RUN --mount=type=bind,from=wheels,target=/opt/wheels \
    --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --python /usr/local/bin/python3.11
COPY deploy/install_cuda_torch.sh deploy/install_cuda_torch.sh
RUN --mount=type=cache,target=/root/.cache/uv \
    if [ -n "${TORCH_CUDA}" ]; then UV=uv deploy/install_cuda_torch.sh "${TORCH_CUDA}"; fi
COPY . .
# Install-time steps of `make install`: the musicnn checkpoints (hash-checked) and librosa's JIT
# cache; then the static files, hashed, for WhiteNoise and the proxy. collectstatic needs settings
# but no service: a development environment with a throwaway key.
RUN .venv/bin/python -m active_learning.core.musicnn.fetch --dest var/models/musicnn \
 && .venv/bin/python scripts/warm_caches.py \
 && REFRAIN_ENV=development SECRET_KEY=collectstatic-only DATABASE_URL=sqlite:////tmp/build.sqlite3 \
    REFRAIN_VAR_DIR=/app/var .venv/bin/python manage.py collectstatic --noinput -v0 \
 && rm -rf var/secret_key var/broker /tmp/build.sqlite3

FROM ${PYTHON_IMAGE} AS runtime
ARG REFRAIN_UID=10001
RUN groupadd --system --gid "${REFRAIN_UID}" refrain \
 && useradd --system --uid "${REFRAIN_UID}" --gid refrain --create-home --home-dir /home/refrain \
    --shell /usr/sbin/nologin refrain \
 && mkdir -p /data/media /data/artifacts /data/imports \
 && chown -R refrain:refrain /data
# Code and environment stay owned by root (read-only to the app); only /data and the JIT cache
# are the app's to write.
COPY --from=build /app /app
RUN mkdir -p /app/var/numba && chown -R refrain:refrain /app/var/numba
WORKDIR /app
# Shared state lives under /data (volumes; several machines: docs/deploy.md). VAR_DIR keeps what
# the image ships: static files and model weights.
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DJANGO_SETTINGS_MODULE=refrain.settings \
    NUMBA_CACHE_DIR=/app/var/numba \
    REFRAIN_VAR_DIR=/app/var \
    MEDIA_ROOT=/data/media \
    ARTIFACT_ROOT=/data/artifacts \
    REFRAIN_IMPORT_ROOTS=/data/imports \
    WHITENOISE_USE_FINDERS=false
USER ${REFRAIN_UID}:${REFRAIN_UID}
EXPOSE 8000
ENTRYPOINT ["deploy/entrypoint.sh"]
CMD ["web"]

FROM ${NGINX_IMAGE} AS proxy
COPY deploy/nginx.conf /etc/nginx/nginx.conf
COPY deploy/nginx_proxy.conf /etc/nginx/refrain_proxy.conf
COPY --from=runtime /app/var/staticfiles /srv/refrain/static
