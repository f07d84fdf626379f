"""Mapped-file ("virtfs") ownership metadata, as QEMU 9p ``security_model=mapped-file``
and ptxdist write it.

For an entry NAME in a directory DIR, ``DIR/.virtfs_metadata/NAME`` holds lines
``virtfs.uid=N``, ``virtfs.gid=N``, ``virtfs.mode=N`` (the whole st_mode, in
decimal) and, for device nodes, ``virtfs.rdev=N``; the export root's own
attributes are in ``ROOT/.virtfs_metadata_root``.

* ``fastnfs.virtfs.meta``     -- the parser and the stamp-checked LRU cache
  (plain-Python twin of the Cython ``fastnfs.virtfs._meta``).
* ``fastnfs.virtfs.overlay``  -- the reader: attributes as the metadata says.
* ``fastnfs.virtfs.store``    -- the dirfd-relative, atomic writes.
* ``fastnfs.virtfs.ops``      -- new and changed metadata with a local
  filesystem's rules (owner of a new entry, chown only by root, chmod only by
  the owner, set-id bits).
* ``fastnfs.virtfs.style``    -- which symlink style a tree uses: QEMU's (a
  file holding the target, metadata ``S_IFLNK``) or real symlinks; the server
  writes new symlinks in that style.
* ``fastnfs.virtfs.importer`` and ``fastnfs.virtfs.check`` -- the
  ``fastnfs virtfs import`` and ``check`` commands (``virtfs.tools``: their
  command line).

The server serves such a tree through ``fastnfs.backends.virtfs``.
"""
