"""Mapped-file ("virtfs") ownership metadata, as QEMU 9p ``security_model=mapped-file``
and ptxdist write it.

For an entry NAME in a directory DIR, ``DIR/.virtfs_metadata/NAME`` holds lines
``virtfs.uid=N``, ``virtfs.gid=N``, ``virtfs.mode=N`` (the whole st_mode, in
decimal) and, for device nodes, ``virtfs.rdev=N``; the export root's own
attributes are in ``ROOT/.virtfs_metadata_root``.

* ``fastnfs.virtfs.meta``  -- the parser and the stamp-checked LRU cache
  (plain-Python twin of the Cython ``fastnfs.virtfs._meta``).
* ``fastnfs.virtfs.store`` -- the dirfd-relative I/O layer the server calls.
"""
