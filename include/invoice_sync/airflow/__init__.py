"""Airflow glue: operators, task callables, the notifier and the DAG factory. No business rules here."""
