# syntax=docker/dockerfile:1
#
# hubcensus: one image for both hubcensus services of docker-compose.yml (its proxy is the nginx image).
#   api     (default command)  hubcensus serve --host 0.0.0.0 --port 8000
#   worker                      hubcensus worker --schedule "0 3 * * *" --run-now ...
# They share the snapshot store, a volume at /data (HUBCENSUS_DATA_DIR).
#
#   docker build -t hubcensus .
#   docker run --rm -p 127.0.0.1:8000:8000 -v hubcensus-data:/data hubcensus
#   docker run --rm -p 127.0.0.1:8000:8000 -v hubcensus-demo:/data hubcensus hubcensus demo --host 0.0.0.0 --port 8000
# The last one imports the bundled 2022-02-21 crawl and serves it. Inside a container the API must listen on
# every interface (--host 0.0.0.0): on 127.0.0.1, the default, nothing outside the container reaches it.
# `-p 127.0.0.1:8000:8000` publishes it on the host's loopback only; leave out `127.0.0.1:` to publish it
# on every interface of the host.

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: the project and its runtime dependencies (no dev extras) in a venv ---------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Only what the package needs (pyproject names README.md as its readme); .dockerignore keeps the rest out.
COPY pyproject.toml README.md ./
COPY hubcensus ./hubcensus
COPY ingest ./ingest
COPY queries ./queries
COPY service ./service
# A regular (not editable) install of the runtime dependencies only: `pip install .`, never `.[dev]`.
RUN pip install . \
    && hubcensus --help > /dev/null

# --- runtime: python slim + the venv, as a non-root user -----------------------------------------
FROM ${PYTHON_IMAGE}

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HUBCENSUS_DATA_DIR=/data

# A fixed uid/gid, so files in the volume keep one owner across rebuilds. /data is created and owned
# here, before VOLUME: a new named volume is initialised from it, so the user can write to it.
RUN groupadd --system --gid 10001 hubcensus \
    && useradd --system --uid 10001 --gid hubcensus --create-home --home-dir /home/hubcensus hubcensus \
    && mkdir /data \
    && chown hubcensus:hubcensus /data

COPY --from=build /opt/venv /opt/venv

USER hubcensus
WORKDIR /home/hubcensus
VOLUME /data
EXPOSE 8000

# No curl in slim images: the check is Python's own urllib. Any error or non-200 answer is a failure.
# (The worker does not listen: docker-compose.yml gives it its own check.)
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]

CMD ["hubcensus", "serve", "--host", "0.0.0.0", "--port", "8000"]
