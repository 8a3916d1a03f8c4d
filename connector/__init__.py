"""The Wiraya database connector: keeps Wiraya up to date from a customer's own tables."""

__version__ = "0.1.0"
