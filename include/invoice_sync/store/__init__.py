"""SQLAlchemy 2.0 access to the invoicing app's tables and the sync-owned tables.

The store never speaks HTTP. It answers the engine's questions with indexed queries and performs every
write in a transaction that first checks the caller still holds its claim (fencing).
"""
