# The invoice-sync image: the official Airflow image plus the `invoice_sync` package from include/.
# Used by every Airflow service in docker-compose.yaml (and by the optional sandbox service).
#
#   docker compose build
#
FROM apache/airflow:3.3.2-python3.11

ARG AIRFLOW_VERSION=3.3.2

# Why not `pip install -r requirements.lock`: the lock is the resolution for a plain venv (make run /
# make test). The image already carries Airflow with dozens of providers, resolved against Airflow's own
# constraints; syncing our lock over it would move packages those providers were built against.
# Everything our package imports at run time (SQLAlchemy, Alembic, pandas, psycopg2, requests, FastAPI,
# uvicorn, tenacity, the http/standard/postgres providers) is an Airflow dependency already in the image.
# So:
#   1. install the project itself without dependencies (`--no-deps`), editable, so the code stays in
#      /opt/airflow/project/include where it was copied;
#   2. pin the two providers whose APIs our code is written against to the lock's versions, in the same
#      command as `apache-airflow==<image version>` so pip can never up- or downgrade Airflow itself
#      (the pattern the Airflow image docs recommend for extra packages);
#   3. import the DAG factory at build time, so a package missing from the image fails the build, not
#      the first DAG parse in production.
# requirements.lock is copied for reference and for tooling inside the image; it is not installed.
WORKDIR /opt/airflow/project
COPY --chown=airflow:0 requirements.txt requirements.lock pyproject.toml ./
COPY --chown=airflow:0 include/ ./include/

RUN pip install --no-cache-dir \
        "apache-airflow==${AIRFLOW_VERSION}" \
        $(grep -E '^apache-airflow-providers-(http|standard)==' requirements.txt) \
    && pip install --no-cache-dir --no-deps -e /opt/airflow/project \
    && AIRFLOW_HOME=/tmp/build-check python -c \
        "import invoice_sync.airflow.dag_factory, invoice_sync.cli, invoice_sync.sandbox.server" \
    && rm -rf /tmp/build-check

WORKDIR /opt/airflow
