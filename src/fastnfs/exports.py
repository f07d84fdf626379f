"""Parser and matcher for unfsd's exports(5) file format.

A pure module: it reads text and answers "which options does client ADDR get on
this export"; it touches no file system beyond reading the exports file (export
paths are normalised lexically, symlinks are *not* resolved: unfsd realpath()s
them, so the server should do that when it wires these entries in).

Syntax (as unfsd's flex/bison parser in unfs3's Config/exports.[ly] accepts it)
--------------------------------------------------------------------------------
One export per line::

    PATH [SPEC [SPEC ...]]          # comment
    SPEC := CLIENT | CLIENT(OPTS) | (OPTS)
    CLIENT := hostname | IPv4 | IPv4/PREFIX | IPv4/NETMASK | IPv6 | IPv6/PREFIX
    OPTS := empty | OPT[,OPT...][,]         OPT := name | name=value

* PATH is absolute: ``/`` followed by non-blanks (so ``#``, ``(`` and ``"`` are
  part of an unquoted path, as in unfsd), or ``"..."`` (no escapes; blanks
  allowed; ends at the next ``"``).
* Specs are separated by blanks; options follow the client *directly*.
  ``host (rw)`` is two specs, ``host`` with the defaults and everyone with
  ``rw`` -- unfsd's behaviour, reported here with a warning.
* A line with no spec exports to everyone with the defaults
  (``ro,root_squash,no_all_squash,secure,fixed``).
* ``#`` outside a path starts a comment to the end of the line; blank lines are
  ignored; a backslash immediately before a newline continues the line.
* Options apply left to right (``(rw,ro)`` is ro). Known options: ro rw
  root_squash no_root_squash all_squash no_all_squash anonuid=N anongid=N
  secure insecure removable fixed. Anything else is ignored with a warning
  (unfsd ignores unknown options too, logging them); unfsd accepts no option
  silently without acting on it, so there is nothing in that class.

Matching (unfsd's exports_options): the specs of one export are tried in order
and the first that matches the client address gives its options.  Several
lines for the same (normalised) path behave like one line with the specs
concatenated in file order (unfsd keeps them separate but, since only a
*longer* path replaces a match, the first matching spec in file order wins),
so they are merged into one ExportEntry.  Choosing *which* export a MOUNT path
falls under (longest matching path whose spec list admits the client) is the
server's job.  Addresses are compared as in unfsd, in the IPv4-mapped IPv6
space, so ``::/0`` matches IPv4 clients too.

Deliberate deviations from unfsd, each reported by ``fastnfs exports check``:

* unresolvable hostname: a warning and the spec matches nothing (unfsd: the
  whole file is rejected). All IPv4 and IPv6 addresses of the name are used
  (unfsd: the first only). Hostnames may contain capitals (unfsd: lowercase
  only).
* ``anonuid=abc`` / ``anonuid=`` / bare ``anonuid``: an error (unfsd atoi()s
  it, silently giving uid 0, or ignores the bare word).
* ``password=...``: an error. unfsd enforces mount passwords; fastnfs cannot,
  and silently exporting without the protection asked for would be wrong.
* ``opt=value`` for an option that takes no value: ignored with a warning
  (unfsd ignores it as unknown).
* backslash-newline counts as a blank everywhere (unfsd glues the two lines
  together, and after an unquoted path keeps the backslash in the path); a
  quoted path ends at the next ``"``, not the last one on the line.
* CRLF line ends are accepted.
* A spec that can never match because earlier specs of the same export cover
  it gets a warning (unfsd says nothing).

ptxdist's patched unfsd prefixes every export path with ``$UNFS_BASE``
(``/ (rw,no_root_squash)`` then means the root file system directory); that is
a server concern, the parser gives the path as written.
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
import os
import posixpath
import re
import socket
import sys
from dataclasses import dataclass, field
from typing import NamedTuple, Optional

__all__ = [
    "DEFAULT_ANONGID", "DEFAULT_ANONUID", "ClientSpec", "ExportEntry", "ExportOptions",
    "ExportsError", "ExportsWarning", "check_main", "load_exports", "parse_exports",
    "single_export", "squash",
]

MAX_ID = 0xFFFFFFFE      # (uint32)-1 is "no id" in Linux; unfsd uses it as "not set"


def _default_anon_ids() -> tuple[int, int]:
    uid = gid = 65534
    try:
        import pwd
        uid = pwd.getpwnam("nobody").pw_uid
    except (ImportError, KeyError):
        pass
    try:
        import grp
    except ImportError:
        return uid, gid
    for name in ("nobody", "nogroup"):
        try:
            return uid, grp.getgrnam(name).gr_gid
        except KeyError:
            continue
    return uid, gid


DEFAULT_ANONUID, DEFAULT_ANONGID = _default_anon_ids()


class ExportsError(Exception):
    """A syntax or value error in an exports file, at FILE:LINE:COLUMN."""

    def __init__(self, filename: str, line: int, column: int, message: str,
                 warnings: Optional[list] = None):
        super().__init__(filename, line, column, message)
        self.filename = filename
        self.line = line
        self.column = column
        self.message = message
        #: warnings found before the error (check_main prints them too)
        self.warnings = list(warnings or [])

    def __str__(self) -> str:
        return "%s:%d:%d: %s" % (self.filename, self.line, self.column, self.message)


class ExportsWarning(NamedTuple):
    filename: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return "%s:%d:%d: warning: %s" % (self.filename, self.line, self.column, self.message)


@dataclass(frozen=True)
class ExportOptions:
    rw: bool = False
    root_squash: bool = True
    all_squash: bool = False
    anonuid: int = DEFAULT_ANONUID
    anongid: int = DEFAULT_ANONGID
    secure: bool = True
    removable: bool = False
    fixed: bool = False   # accepted for completeness: always "not removable"
    boards: Optional[str] = None   # boards=DIR: a private layer per board (BASE@NAME)
    board_by_address: bool = False  # BASE alone: the layer named after the client address

    def __str__(self) -> str:
        """The options in exports(5) spelling, e.g. ``rw,no_root_squash,insecure``."""
        words = ["rw" if self.rw else "ro",
                 "root_squash" if self.root_squash else "no_root_squash"]
        if self.all_squash:
            words.append("all_squash")
        if self.anonuid != DEFAULT_ANONUID:
            words.append("anonuid=%d" % self.anonuid)
        if self.anongid != DEFAULT_ANONGID:
            words.append("anongid=%d" % self.anongid)
        if not self.secure:
            words.append("insecure")
        if self.removable:
            words.append("removable")
        if self.boards:
            words.append("boards=%s" % self.boards)
        if self.board_by_address:
            words.append("board_by_address")
        return ",".join(words)


# ---------------------------------------------------------------------------
# addresses: everything lives in the IPv4-mapped IPv6 space, as in unfsd

_V4MAPPED = 0xFFFF << 32
_EVERYONE = (ipaddress.IPv4Network("0.0.0.0/0"), ipaddress.IPv6Network("::/0"))
_IPV4_RE = re.compile(r"([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})", re.ASCII)
_DIGITS_RE = re.compile(r"[0-9]+", re.ASCII)
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", re.ASCII)


def _net_key(net) -> tuple[int, int]:
    """(prefix length, network value) of a network in the 128-bit mapped space."""
    if net.version == 4:
        return 96 + net.prefixlen, _V4MAPPED | int(net.network_address)
    return net.prefixlen, int(net.network_address)


@functools.lru_cache(maxsize=4096)
def _addr128(addr: str) -> Optional[int]:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return None
    return _V4MAPPED | int(ip) if ip.version == 4 else int(ip)


def _parse_ipv4(text: str) -> Optional[ipaddress.IPv4Address]:
    """Strict dotted quad (no leading zeros, as inet_pton and unfsd's lexer)."""
    m = _IPV4_RE.fullmatch(text)
    if not m:
        return None
    for part in m.groups():
        if int(part) > 255 or (len(part) > 1 and part[0] == "0"):
            return None
    return ipaddress.IPv4Address(text)


def _resolve(name: str) -> list[str]:
    """IPv4 and IPv6 addresses of a hostname (raises OSError). Tests replace this."""
    try:
        infos = socket.getaddrinfo(name, None, socket.AF_UNSPEC, socket.SOCK_STREAM)
    except OSError:
        if name.lower() == "localhost" or name.lower().endswith(".localhost"):
            return ["127.0.0.1", "::1"]
        raise
    out: list[str] = []
    for info in infos:
        if info[0] not in (socket.AF_INET, socket.AF_INET6):
            continue
        a = info[4][0].split("%")[0]  # a link-local address's scope does not matter here
        if a not in out:
            out.append(a)
    return out


class _SpecError(ValueError):
    def __init__(self, offset: int, message: str):
        super().__init__(message)
        self.offset = offset
        self.message = message


def _client_networks(text: str, cache: Optional[dict] = None) -> tuple[tuple, Optional[str]]:
    """Networks a client specification stands for, plus a warning message or None.

    Raises _SpecError(offset into text, message) if it is malformed."""
    if text in ("", "*"):
        if text == "*":
            raise _SpecError(0, "wildcard client '*' is not supported (unfsd has no wildcards);"
                                " leave the client out to export to everyone, e.g. '/path (rw)'")
        return _EVERYONE, None
    if "*" in text or "?" in text or "[" in text:
        raise _SpecError(0, "wildcard hostname '%s' is not supported (unfsd has no wildcards);"
                            " use a network such as 192.168.1.0/24" % text)
    if text.startswith("@"):
        raise _SpecError(0, "netgroup '%s' is not supported (unfsd has no netgroups)" % text)
    if "/" in text:
        addr, _, suffix = text.partition("/")
        so = len(addr) + 1
        if ":" in addr:
            try:
                ip6 = ipaddress.IPv6Address(addr)
            except ValueError:
                raise _SpecError(0, "bad IPv6 address '%s' in network '%s'" % (addr, text)) from None
            if not _DIGITS_RE.fullmatch(suffix) or int(suffix) > 128:
                raise _SpecError(so, "bad prefix length '/%s' (expected 0-128)" % suffix)
            return (ipaddress.IPv6Network((ip6, int(suffix)), strict=False),), None
        ip4 = _parse_ipv4(addr)
        if ip4 is None:
            raise _SpecError(0, "bad IPv4 address '%s' in network '%s'" % (addr, text))
        if _DIGITS_RE.fullmatch(suffix):
            prefix = int(suffix)
            if prefix > 32:
                raise _SpecError(so, "bad prefix length '/%s' (expected 0-32)" % suffix)
        elif "." in suffix:
            mask = _parse_ipv4(suffix)
            if mask is None:
                raise _SpecError(so, "bad netmask '%s' (expected a dotted quad such as"
                                     " 255.255.255.0)" % suffix)
            inv = ~int(mask) & 0xFFFFFFFF
            if inv & (inv + 1):
                raise _SpecError(so, "bad netmask '%s' (its one bits must be contiguous,"
                                     " such as 255.255.255.0)" % suffix)
            prefix = 32 - inv.bit_length()
        else:
            raise _SpecError(so, "bad network '%s': expected a prefix length (0-32) or a"
                                 " netmask after '/'" % text)
        return (ipaddress.IPv4Network((ip4, prefix), strict=False),), None
    if all(c in "0123456789." for c in text):
        ip4 = _parse_ipv4(text)
        if ip4 is None:
            raise _SpecError(0, "bad IPv4 address '%s'" % text)
        return (ipaddress.IPv4Network(ip4),), None
    if ":" in text:
        try:
            return (ipaddress.IPv6Network(ipaddress.IPv6Address(text)),), None
        except ValueError:
            raise _SpecError(0, "bad IPv6 address '%s'" % text) from None
    if not _HOSTNAME_RE.fullmatch(text):
        raise _SpecError(0, "bad client '%s': expected a hostname, an IP address or a network"
                            " (address/prefix or address/netmask)" % text)
    key = text.lower()
    if cache is not None and key in cache:
        addrs, err = cache[key]
    else:
        try:
            addrs, err = _resolve(text), None
        except OSError as e:
            addrs, err = [], getattr(e, "strerror", None) or str(e)
        if cache is not None:
            cache[key] = (addrs, err)
    nets = tuple(ipaddress.ip_network(a) for a in addrs)
    if not nets:
        return (), ("cannot resolve hostname '%s' (%s); this client specification matches"
                    " nothing" % (text, err or "no address"))
    return nets, None


@dataclass
class ClientSpec:
    """One client specification of an export: who (text, as written; "" for
    everyone) and with which options.  ``networks`` is filled from ``text`` when
    not given (hostnames are resolved then)."""

    text: str
    options: ExportOptions = field(default_factory=ExportOptions)
    networks: Optional[tuple] = None
    line: int = 0
    column: int = 0
    _keys: tuple = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self):
        if self.networks is None:
            try:
                self.networks, _ = _client_networks(self.text)
            except _SpecError as e:
                raise ValueError(e.message) from None
        self.networks = tuple(self.networks)
        keys = []
        for net in self.networks:
            plen, value = _net_key(net)
            keys.append((value >> (128 - plen), 128 - plen))
        self._keys = tuple(keys)

    @property
    def everyone(self) -> bool:
        return any(shift == 128 for _, shift in self._keys)

    def matches(self, addr) -> bool:
        """Whether the client at ``addr`` (IPv4 dotted quad, IPv4-mapped IPv6 or
        IPv6 text) is covered by this spec. Unparseable addresses match nothing."""
        a = _addr128(str(addr))
        if a is None:
            return False
        for value, shift in self._keys:
            if a >> shift == value:
                return True
        return False

    def _covered_by(self, earlier: "ClientSpec") -> bool:
        """Whether every address this spec matches is matched by ``earlier``."""
        if not self._keys:
            return False
        for value, shift in self._keys:
            if not any(shift <= eshift and value >> (eshift - shift) == evalue
                       for evalue, eshift in earlier._keys):
                return False
        return True


@dataclass
class ExportEntry:
    path: bytes
    clients: list
    filename: str = "<exports>"
    line: int = 0

    def options_for(self, addr) -> Optional[ExportOptions]:
        """Options of the first client spec matching ``addr``; None = refused."""
        for spec in self.clients:
            if spec.matches(addr):
                return spec.options
        return None


# ---------------------------------------------------------------------------
# the parser

_FLAGS = {
    "ro": ("rw", False), "rw": ("rw", True),
    "root_squash": ("root_squash", True), "no_root_squash": ("root_squash", False),
    "all_squash": ("all_squash", True), "no_all_squash": ("all_squash", False),
    "secure": ("secure", True), "insecure": ("secure", False),
    "removable": ("removable", True), "fixed": ("removable", False),
    "board_by_address": ("board_by_address", True),
}
_ID_OPTIONS = ("anonuid", "anongid")
# Linux knfsd options people copy into exports files; unfsd ignores them too.
_KNFSD_OPTIONS = frozenset("""
    sync async subtree_check no_subtree_check wdelay no_wdelay hide nohide crossmnt
    secure_locks insecure_locks auth_nlm no_auth_nlm no_acl acl mountpoint mp fsid
    sec refer replicas pnfs no_pnfs rdirplus nordirplus root_dir uuid
    security_label nocrossmnt
""".split())
_OPTION_NAME_RE = re.compile(r"[A-Za-z0-9_.-]*", re.ASCII)
_BLANKS = " \t"


def _normalise_path(path: str) -> bytes:
    p = posixpath.normpath(path)
    if p.startswith("//"):
        p = "/" + p.lstrip("/")
    return os.fsencode(p)


class _Parser:
    def __init__(self, text: str, filename: str):
        self.text = text.replace("\r\n", "\n")
        self.filename = filename
        self.pos = 0
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", self.text)]
        self.warnings: list[ExportsWarning] = []
        self.entries: dict[bytes, ExportEntry] = {}
        self.resolve_cache: dict = {}

    # -- positions and diagnostics
    def loc(self, pos: int) -> tuple[int, int]:
        line = bisect.bisect_right(self.line_starts, pos)
        return line, pos - self.line_starts[line - 1] + 1

    def error(self, pos: int, message: str):
        line, col = self.loc(pos)
        raise ExportsError(self.filename, line, col, message, self.warnings)

    def warn(self, pos: int, message: str):
        line, col = self.loc(pos)
        self.warnings.append(ExportsWarning(self.filename, line, col, message))

    # -- character classes
    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def at_continuation(self, pos: Optional[int] = None) -> bool:
        return self.text.startswith("\\\n", self.pos if pos is None else pos)

    def at_blank(self) -> bool:
        return self.peek() in ("\t", " ") and self.peek() != "" or self.at_continuation()

    def at_eol(self) -> bool:
        """End of the logical line: newline, end of text or a comment."""
        return self.peek() in ("", "\n", "#")

    def skip_blanks(self) -> bool:
        start = self.pos
        while True:
            c = self.peek()
            if c and c in _BLANKS:
                self.pos += 1
            elif self.at_continuation():
                self.pos += 2
            else:
                return self.pos > start

    def skip_to_next_line(self):
        nl = self.text.find("\n", self.pos)
        self.pos = len(self.text) if nl < 0 else nl + 1

    def read_word(self, stops: str) -> str:
        """Characters up to a blank, a continuation, the end of the line or one of stops."""
        start = self.pos
        text = self.text
        n = len(text)
        while self.pos < n:
            c = text[self.pos]
            if c in _BLANKS or c == "\n" or c in stops or self.at_continuation():
                break
            self.pos += 1
        return text[start:self.pos]

    # -- grammar
    def parse(self) -> tuple[list[ExportEntry], list[ExportsWarning]]:
        while self.pos < len(self.text):
            self.skip_blanks()
            if not self.at_eol():
                self.parse_export()
            if not self.at_eol():   # parse_export stops at the end of the line
                self.error(self.pos, "internal error: expected end of line")
            self.skip_to_next_line()
        self.check_shadowing()
        return list(self.entries.values()), self.warnings

    def parse_export(self):
        start = self.pos
        line, _ = self.loc(start)
        if self.peek() == '"':
            close = self.text.find('"', start + 1)
            nl = self.text.find("\n", start + 1)
            if close < 0 or 0 <= nl < close:
                self.error(start, "unterminated quoted path (expected a closing '\"' on the"
                                  " same line)")
            raw, path_pos = self.text[start + 1:close], start + 1
            self.pos = close + 1
            if not (self.at_eol() or self.at_blank()):
                self.error(self.pos, "expected whitespace or end of line after the quoted path,"
                                     " got '%s'" % self.peek())
            if raw == "":
                self.error(start, "empty export path")
        else:
            raw, path_pos = self.read_word(""), start
            if "(" in raw and raw.startswith("/"):
                i = raw.index("(")
                self.warn(start + i, "'(' is part of the path '%s'; put a space before '%s'"
                                     " if it was meant as options for everyone"
                          % (raw, raw[i:]))
        if not raw.startswith("/"):
            self.error(path_pos, "export path must be absolute (start with '/'), got '%s'" % raw)
        if "\0" in raw:
            self.error(path_pos + raw.index("\0"), "NUL character in export path")
        path = _normalise_path(raw)
        filename = self.filename
        entry = self.entries.get(path)
        if entry is None:
            entry = self.entries[path] = ExportEntry(path, [], filename, line)
        specs = self.parse_specs()
        if not specs:
            specs = [ClientSpec("", ExportOptions(), _EVERYONE, *self.loc(path_pos))]
        entry.clients.extend(specs)

    def parse_specs(self) -> list[ClientSpec]:
        specs: list[ClientSpec] = []
        bare_name: Optional[tuple] = None      # (pos, text) of a name without options
        while True:
            self.skip_blanks()
            if self.at_eol():
                return specs
            spos = self.pos
            if self.peek() == "(":
                opts = self.parse_options()
                spec = ClientSpec("", opts, _EVERYONE, *self.loc(spos))
                if bare_name is not None:
                    both = "%s %s" % (bare_name[1], self.text[spos:self.pos])
                    self.warn(spos, "'%s' is two client specifications: '%s' with the default"
                                    " options and everyone with %s; write '%s' without the"
                                    " space if the options are meant for %s"
                              % (both, bare_name[1], self.text[spos:self.pos],
                                 both.replace(" ", ""), bare_name[1]))
                bare_name = None
            else:
                name = self.read_word("(#")
                try:
                    nets, warning = _client_networks(name, self.resolve_cache)
                except _SpecError as e:
                    self.error(spos + e.offset, e.message)
                if warning:
                    self.warn(spos, warning)
                if self.peek() == "(":
                    opts = self.parse_options()
                    bare_name = None
                else:
                    opts = ExportOptions()
                    bare_name = (spos, name)
                spec = ClientSpec(name, opts, nets, *self.loc(spos))
            specs.append(spec)
            if not (self.at_eol() or self.at_blank()):
                self.error(self.pos, "expected whitespace or end of line after client"
                                     " specification '%s', got '%s'"
                           % (self.text[spos:self.pos], self.peek()))

    def parse_options(self) -> ExportOptions:
        assert self.peek() == "("
        self.pos += 1
        values = {}
        while True:
            if self.peek() == ")":          # "()" and a trailing comma are fine
                self.pos += 1
                return ExportOptions(**values)
            npos = self.pos
            m = _OPTION_NAME_RE.match(self.text, self.pos)
            name = m.group()
            self.pos = m.end()
            if not name:
                self.option_syntax_error("expected an option name")
            value = vpos = None
            if self.peek() == "=":
                self.pos += 1
                vpos = self.pos
                value = self.read_word(",)")
            self.apply_option(values, name, npos, value, vpos)
            c = self.peek()
            if c == ",":
                self.pos += 1
                if self.peek() == ")":
                    self.pos += 1
                    return ExportOptions(**values)
                continue
            if c == ")":
                self.pos += 1
                return ExportOptions(**values)
            self.option_syntax_error("expected ',' or ')' after option '%s'" % name)

    def option_syntax_error(self, what: str):
        if self.at_eol():
            self.error(self.pos, "expected ')' after options")
        if self.at_blank():
            here = self.pos
            self.skip_blanks()
            if self.at_eol():
                self.error(here, "expected ')' after options")
            self.error(here, "unexpected whitespace inside options (%s)" % what)
        self.error(self.pos, "%s, got '%s'" % (what, self.peek()))

    def apply_option(self, values: dict, name: str, npos: int, value, vpos):
        if name in _FLAGS:
            if value is not None:
                self.warn(npos, "option '%s' takes no value; '%s=%s' ignored" % (name, name, value))
                return
            attr, setting = _FLAGS[name]
            values[attr] = setting
            if attr == "removable":
                values["fixed"] = not setting
        elif name in _ID_OPTIONS:
            if value is None or not _DIGITS_RE.fullmatch(value):
                got = "nothing" if not value else "'%s'" % value
                self.error(npos if value is None else vpos,
                           "%s needs a number (%s=N), got %s" % (name, name, got))
            n = int(value)
            if n > MAX_ID:
                self.error(vpos, "%s=%s is out of range (expected 0-%d)" % (name, value, MAX_ID))
            values[name] = n
        elif name == "boards":
            if not value:
                self.error(npos if value is None else vpos,
                           "boards needs a directory (boards=DIR)")
            if not value.startswith("/"):
                self.error(vpos, "boards=%s: the directory must be an absolute path" % value)
            values["boards"] = value
        elif name == "password":
            self.error(npos, "option 'password' is not supported (fastnfs cannot ask clients"
                             " for unfsd mount passwords); restrict the clients instead")
        elif name in _KNFSD_OPTIONS:
            self.warn(npos, "option '%s' ignored (a Linux kernel NFS server option; unfsd and"
                            " fastnfs have no such setting)" % name)
        else:
            hint = ""
            low = name.lower()
            if low != name and (low in _FLAGS or low in _ID_OPTIONS):
                hint = " (options are lower case: did you mean '%s'?)" % low
            self.warn(npos, "unknown option '%s' ignored%s" % (name, hint))

    def check_shadowing(self):
        for entry in self.entries.values():
            for i, spec in enumerate(entry.clients):
                for earlier in entry.clients[:i]:
                    if spec._covered_by(earlier):
                        subject = ("client specification '%s'" % spec.text if spec.text
                                   else "the everyone specification")
                        who = ("'%s'" % earlier.text if earlier.text
                               else "the everyone specification")
                        self.warnings.append(ExportsWarning(
                            self.filename, spec.line, spec.column,
                            "%s for %s never applies: %s at line %d column %d comes first"
                            " and matches every address it does"
                            % (subject, os.fsdecode(entry.path), who, earlier.line,
                               earlier.column)))
                        break
        self.warnings.sort(key=lambda w: (w.line, w.column))


def parse_exports(text: str, filename: str = "<exports>"
                  ) -> tuple[list[ExportEntry], list[ExportsWarning]]:
    """Parse exports(5) text. Raises ExportsError on the first syntax error."""
    return _Parser(text, filename).parse()


def load_exports(path: str) -> tuple[list[ExportEntry], list[ExportsWarning]]:
    """Read and parse an exports file; an unreadable file is an ExportsError at line 0."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ExportsError(str(path), 0, 0, "cannot read exports file: %s"
                           % (e.strerror or e)) from None
    return parse_exports(os.fsdecode(data), str(path))


def single_export(path, *, rw: bool = True, root_squash: bool = False,
                  all_squash: bool = False, anonuid: Optional[int] = None,
                  anongid: Optional[int] = None, secure: bool = False) -> ExportEntry:
    """The export `fastnfs serve PATH` means without an exports file: PATH (made
    absolute against the current directory) to everyone with these options."""
    p = os.fsdecode(path)
    if not p:
        raise ValueError("empty export path")
    ids = {}
    for name, v in (("anonuid", anonuid), ("anongid", anongid)):
        if v is not None:
            if not 0 <= int(v) <= MAX_ID:
                raise ValueError("%s out of range: %r" % (name, v))
            ids[name] = int(v)
    opts = ExportOptions(rw=rw, root_squash=root_squash, all_squash=all_squash,
                         secure=secure, **ids)
    return ExportEntry(_normalise_path(os.path.abspath(p)), [ClientSpec("", opts, _EVERYONE)],
                       "<command line>", 0)


def squash(opts: ExportOptions, uid: int, gid: int, gids=()) -> tuple[int, int, tuple]:
    """Map AUTH_UNIX credentials as Linux knfsd and unfsd do.

    all_squash: everyone becomes anonuid/anongid with no supplementary groups
    (knfsd drops them; unfsd maps each to the anonymous gid, which grants
    nothing more).  root_squash: uid 0 -> anonuid, gid 0 -> anongid, and any 0
    among the supplementary gids -> anongid, each independently."""
    if opts.all_squash:
        return opts.anonuid, opts.anongid, ()
    if not opts.root_squash:
        return uid, gid, tuple(gids)
    return (opts.anonuid if uid == 0 else uid,
            opts.anongid if gid == 0 else gid,
            tuple(opts.anongid if g == 0 else g for g in gids))


_CHECK_USAGE = "usage: fastnfs exports check FILE [FILE ...]"


def check_main(argv) -> int:
    """`fastnfs exports check FILE...` (argv: the arguments after `check`).

    Errors and warnings go to stderr as FILE:LINE:COL: ...; each good file gets
    "FILE: N exports OK" on stdout. Returns 0 if every file parsed, else 1."""
    argv = list(argv)
    if argv and argv[0] in ("-h", "--help"):
        print(_CHECK_USAGE + "\n\nCheck exports(5) files as fastnfs (and unfsd) read them.")
        return 0
    files = argv[1:] if argv[:1] == ["--"] else argv
    if not files or (files is argv and any(a.startswith("-") and a != "-" for a in argv)):
        print(_CHECK_USAGE, file=sys.stderr)
        return 1
    status = 0
    for name in files:
        try:
            entries, warnings = load_exports(name)
        except ExportsError as e:
            for w in e.warnings:
                print(w, file=sys.stderr)
            print(e, file=sys.stderr)
            status = 1
            continue
        for w in warnings:
            print(w, file=sys.stderr)
        print("%s: %d exports OK" % (name, len(entries)))
    return status
