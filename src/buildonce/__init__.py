"""Build a container image once per commit and let every downstream job use that same image."""

__version__ = "0.1.0"
