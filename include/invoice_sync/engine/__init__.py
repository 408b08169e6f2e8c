"""The tool-independent sync of one integration: claim, validate, link customers, look up, push, record."""
