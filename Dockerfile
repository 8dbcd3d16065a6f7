# Sluice gateway serving the embedded demo model (or any model given by flags/--config).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SLUICE_CACHE_DIR=/home/sluice/.cache/sluice

RUN useradd --create-home --uid 10001 sluice
WORKDIR /app
COPY pyproject.toml README.md ./
COPY batching ./batching
COPY scheduler ./scheduler
COPY backends ./backends
COPY gateway ./gateway
COPY sim ./sim
RUN pip install --no-cache-dir . && rm -rf /root/.cache

USER sluice
# Build the demo model at image build time, so the first start needs nothing.
RUN python -c "from backends.worker.demo import demo_model_path; print(demo_model_path())"

EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD python -c "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=2).status != 200)"
ENTRYPOINT ["sluice", "serve", "--host", "0.0.0.0"]
