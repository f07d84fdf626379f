"""Exceptions shared by the Cython modules and their pure-Python twins."""


class XdrError(ValueError):
    """Bytes that do not decode as the expected XDR type (-> GARBAGE_ARGS)."""
