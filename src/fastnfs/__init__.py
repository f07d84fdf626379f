"""fastnfs: a user-space NFSv3 server for embedded Linux root filesystems."""

__version__ = "0.1.0"
