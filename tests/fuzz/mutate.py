"""Record mutations shared by the built-in fuzz engine and the network fuzzer.

Plain ``random.Random`` driven, no dependencies: bit flips, byte and word
overwrites with interesting values, truncation, garbage extension, "length
field lies" (a 32-bit word that looks like an XDR length is set to a value the
bytes do not back), word insertion/deletion, and splicing two records.
"""

from __future__ import annotations

import random
import struct

INTERESTING32 = (0, 1, 2, 3, 4, 0x7F, 0x80, 0xFF, 0x100, 0x3FF, 0x400, 0x401, 0xFFFF, 0x10000,
                 0x7FFFFFFF, 0x80000000, 0x80000001, 0xFFFFFFFE, 0xFFFFFFFF, 24, 32, 64, 65,
                 255, 256, 1024, 1025, 400, 401, 16, 17)


def _words(buf) -> int:
    return len(buf) // 4


def length_lie(rng: random.Random, buf: bytearray) -> None:
    """Find a word that could be a length (small, fits the rest) and lie about it."""
    cands = []
    for i in range(0, len(buf) - 3, 4):
        v = int.from_bytes(buf[i:i + 4], "big")
        if 0 < v <= len(buf) - i - 4:
            cands.append((i, v))
    if not cands:
        return
    i, v = rng.choice(cands)
    new = rng.choice((v + 1, v - 1, v + 4, v * 2, len(buf), 0xFFFFFFFF, 0x7FFFFFFF,
                      0xFFFFFFFC, 0x40000000, v + 0x10000))
    buf[i:i + 4] = struct.pack(">I", new & 0xFFFFFFFF)


def mutate(rng: random.Random, data: bytes, other: bytes | None = None, rounds: int = 0) -> bytes:
    buf = bytearray(data)
    for _ in range(rounds or rng.choice((1, 1, 1, 2, 3, 5))):
        op = rng.randrange(11)
        n = len(buf)
        if op == 0 and n:                       # bit flip
            i = rng.randrange(n)
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and n:                     # random byte
            buf[rng.randrange(n)] = rng.randrange(256)
        elif op == 2 and n >= 4:                # interesting word, aligned
            i = rng.randrange(_words(buf)) * 4
            buf[i:i + 4] = struct.pack(">I", rng.choice(INTERESTING32))
        elif op == 3 and n:                     # truncate
            del buf[rng.randrange(n):]
        elif op == 4:                           # garbage tail
            buf += rng.randbytes(rng.choice((1, 3, 4, 8, 64, 500)))
        elif op == 5:
            length_lie(rng, buf)
        elif op == 6 and n >= 4:                # delete a word
            i = rng.randrange(_words(buf)) * 4
            del buf[i:i + 4]
        elif op == 7:                           # insert a word
            i = rng.randrange(_words(buf) + 1) * 4
            buf[i:i] = struct.pack(">I", rng.choice(INTERESTING32))
        elif op == 8 and other:                 # splice
            a = rng.randrange(len(buf) + 1)
            b = rng.randrange(len(other) + 1)
            buf = buf[:a] + bytearray(other[b:])
        elif op == 9 and n >= 8:                # word +- small
            i = rng.randrange(_words(buf)) * 4
            v = (int.from_bytes(buf[i:i + 4], "big") + rng.choice((-2, -1, 1, 2))) & 0xFFFFFFFF
            buf[i:i + 4] = struct.pack(">I", v)
        elif op == 10 and n >= 8:               # duplicate a chunk
            a = rng.randrange(n)
            b = min(n, a + rng.randrange(1, 64))
            i = rng.randrange(n)
            buf[i:i] = buf[a:b]
    return bytes(buf)


def random_record(rng: random.Random) -> bytes:
    """Pure garbage, or a plausible call header followed by garbage."""
    if rng.random() < 0.3:
        return rng.randbytes(rng.randrange(0, 200))
    prog = rng.choice((100003, 100005, 100000, rng.randrange(1 << 32)))
    vers = rng.choice((1, 2, 3, 4, rng.randrange(1 << 32)))
    proc = rng.randrange(24)
    hdr = struct.pack(">IIIIII", rng.randrange(1 << 32), 0, 2, prog, vers, proc)
    flavor = rng.choice((0, 1, 1, 2, 6))
    body = rng.randbytes(rng.choice((0, 4, 20, 40, 400)))
    hdr += struct.pack(">II", flavor, len(body)) + body + b"\0" * (-len(body) & 3)
    hdr += struct.pack(">II", 0, 0)
    return hdr + rng.randbytes(rng.randrange(0, 300))
