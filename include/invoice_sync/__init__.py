"""invoice-sync: registered sales invoices from the invoicing app into accounting tools, on Airflow."""

__version__ = "0.1.0"
