"""The domain: invoices, integrations, outcomes and the rules that decide what may be pushed.

Nothing in here does I/O or imports Airflow, so every rule can be tested in microseconds.
"""
