# C-level interface of fastnfs._perm (the permission rules; cimported by _fastpath).

from libc.stdint cimport uint32_t

cdef bint allowed_ids(uint32_t cuid, uint32_t cgid, tuple cgids, uint32_t uid, uint32_t gid,
                      uint32_t mode, int want) noexcept
cdef bint io_allowed_ids(uint32_t cuid, uint32_t cgid, tuple cgids, uint32_t uid,
                         uint32_t gid, uint32_t mode, int want) noexcept
cdef uint32_t access3_ids(uint32_t cuid, uint32_t cgid, tuple cgids, bint read_only,
                          uint32_t uid, uint32_t gid, uint32_t mode,
                          uint32_t requested) noexcept
cdef bint io_allowed_ids(uint32_t cuid, uint32_t cgid, tuple cgids, uint32_t uid, uint32_t gid,
                         uint32_t mode, int want) noexcept
