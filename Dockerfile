FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LEDGER_HOST=0.0.0.0 \
    LEDGER_PORT=8000 \
    LEDGER_DATA_DIR=/data

WORKDIR /app
# Exactly what the lock pins, every file hash-checked; this layer changes only with the lock.
COPY requirements.lock ./
RUN pip install --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY ledger ./ledger
COPY projections ./projections
COPY api ./api
COPY migrations ./migrations
# The project alone, built with the locked setuptools: nothing unpinned enters the image.
RUN pip install --no-deps --no-build-isolation . \
    && pip check \
    && rm -rf build ./*.egg-info \
    && groupadd --system --gid 10001 ledger \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home ledger \
    && mkdir -p /data && chown 10001:10001 /data && chmod 700 /data

# Numeric, so that an orchestrator can check it is not root without reading /etc/passwd.
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/ready', timeout=2).status != 200)"
CMD ["ledger", "serve"]
