# The invoice-sync images, on the official Airflow image.
#
#   docker compose build
#
# Stage `runtime` (the default, what every Airflow service runs): the runtime lock and the runtime
# project (include/invoice_sync), nothing else. No simulator, bench or chaos code is in it.
# Stage `sandbox` (the demo profile's simulator service only): the runtime plus the development package
# (include/invoice_sync_dev).
FROM apache/airflow:3.3.2-python3.11 AS runtime

# Installed with --no-deps from the hashed lock: exactly the resolution `make test` ran against (the
# image's Airflow is the lock's Airflow; --require-hashes refuses any file that is not the locked one).
# Then the project itself, not editable, so only the package's files land in site-packages. The build
# imports every runtime module, so a package missing from the image fails the build, not the first DAG
# parse in production (tests/deploy/test_runtime_package.py does the same without Docker).
WORKDIR /opt/airflow/project
COPY --chown=airflow:0 requirements.lock pyproject.toml ./
COPY --chown=airflow:0 include/invoice_sync/ ./include/invoice_sync/

RUN pip install --no-cache-dir --no-deps --require-hashes -r requirements.lock \
    && pip install --no-cache-dir --no-deps /opt/airflow/project \
    && AIRFLOW_HOME=/tmp/build-check python -c \
        "import pkgutil, importlib, invoice_sync; [importlib.import_module(m.name) for m in pkgutil.walk_packages(invoice_sync.__path__, 'invoice_sync.') if '.migrations' not in m.name]" \
    && rm -rf /tmp/build-check

WORKDIR /opt/airflow

FROM runtime AS sandbox
COPY --chown=airflow:0 include/invoice_sync_dev/ /opt/airflow/project/include/invoice_sync_dev/
RUN pip install --no-cache-dir --no-deps /opt/airflow/project/include/invoice_sync_dev

FROM runtime
