# syntax=docker/dockerfile:1
# Production image. Point it at a real Redis >= 7 / Valkey >= 7.2 with AOF on:
#   docker run -e LIVECOMMERCE_REDIS_URL=redis://redis:6379/0 \
#              -e LIVECOMMERCE_TOKEN_SECRET=... -e LIVECOMMERCE_DEMO=false -p 8000:8000 livecommerce

FROM python:3.12-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# Dependencies in their own layer: rebuilt only when pyproject.toml changes.
COPY pyproject.toml README.md ./
RUN mkdir livecommerce && touch livecommerce/__init__.py \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install . \
 && /opt/venv/bin/pip uninstall -y livecommerce
COPY livecommerce ./livecommerce
RUN /opt/venv/bin/pip install --no-deps .

FROM python:3.12-slim AS runtime
RUN useradd --create-home --uid 10001 livecommerce
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    LIVECOMMERCE_HOST=0.0.0.0 \
    LIVECOMMERCE_PORT=8000 \
    LIVECOMMERCE_DATA_DIR=/home/livecommerce/data
USER livecommerce
WORKDIR /home/livecommerce
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=2s CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/livez').status != 200)"]
STOPSIGNAL SIGTERM
CMD ["livecommerce", "serve"]
