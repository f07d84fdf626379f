"""qemu guests with the Linux kernel NFS client, for fastnfs tests (see guest.py)."""
