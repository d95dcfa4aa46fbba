"""chatui: a terminal chat app for large language models whose stop key really stops."""

__version__ = "0.1.0"
