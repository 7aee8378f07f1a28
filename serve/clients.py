"""Per-client API keys: the clients file (`MEDCAST_CLIENTS_FILE`), its checks, the lookup of a
request's key and the `python -m serve keys` commands.

The file holds one key per line, `name <sha256 hex of the key>`, optionally followed by the
name's role, `role=client` (the default) or `role=auditor`; `#` comments and blank lines are
allowed. A client's key predicts (its rows are logged under its name) and reads back only its
own rows of the prediction log; an auditor's key reads every row and predicts nothing (as
MEDCAST_API_KEY). A name has one role: lines of one name that disagree stop start-up, and `keys
add` gives a new key of a known name that name's role. Files written before roles existed are
files of clients. Keys are never stored in clear: `keys add` prints a new key once and keeps its
hash. A name may hold several keys (rotation: add the new one, move the caller, revoke the old).
The file must not be accessible by group or others (as ssh does with private keys): a key file
anyone can read lets anyone plant a key, or learn who the clients are.

The lookup hashes the given key and compares it with every stored hash using
`hmac.compare_digest`, without stopping at the first match, so its time depends on neither the
key nor which stored key it is close to. The registry re-reads the file when its mtime (size,
inode) changes — checked at most once a second — or on `reload()` (SIGHUP); a file that became
invalid is logged and the previous keys stay in force, so an edit in progress never locks every
client out nor lets everyone in.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import stat
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger("medcast.serve")

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,99}")
_HEX = re.compile(r"[0-9a-f]{64}")
CLIENT, AUDITOR = "client", "auditor"
ROLES = (CLIENT, AUDITOR)
RECHECK_S = 1.0  # how often a request may stat the file


class ClientsError(ValueError):
    """The clients file (or another secret file) is missing, unsafe or malformed."""


def check_private(path: Path, what: str) -> os.stat_result:
    """The file's stat; ClientsError unless it is a regular file nobody but its owner may use."""
    try:
        st = path.stat()
    except OSError as exc:
        raise ClientsError(f"{what}={str(path)!r}: cannot read ({exc.strerror})") from exc
    if not stat.S_ISREG(st.st_mode):
        raise ClientsError(f"{what}={str(path)!r}: not a regular file")
    if st.st_mode & 0o077:
        raise ClientsError(
            f"{what}={str(path)!r}: accessible by group or others (mode "
            f"{stat.S_IMODE(st.st_mode):04o}); run `chmod 600 {path}`"
        )
    return st


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Entry:
    name: str
    digest: bytes  # sha256 of the key (32 bytes)
    role: str = CLIENT  # one of ROLES


def _role(parts: list[str]) -> str | None:
    """The role a line's fields give (two fields: a client), or None if they give none."""
    if len(parts) == 2:
        return CLIENT
    key, _, value = parts[-1].partition("=")
    return value if len(parts) == 3 and key == "role" and value in ROLES else None


def parse(text: str, source: str) -> list[Entry]:
    """The entries of a clients file; ClientsError naming the first bad line."""
    entries: list[Entry] = []
    roles: dict[str, tuple[str, int]] = {}  # name → (its role, the line that first gave it)
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        role = _role(parts)
        if (len(parts) < 2 or role is None or not NAME.fullmatch(parts[0])
                or not _HEX.fullmatch(parts[1].lower())):
            shown = parts[0] if parts and NAME.fullmatch(parts[0]) else "…"
            raise ClientsError(
                f"{source} line {n}: expected 'name <64 hex digits: sha256 of the key>', then "
                f"optionally role=client or role=auditor (name: letters, digits, . _ @ -), got "
                f"{shown} and {len(parts) - 1} more field(s)"
            )
        first = roles.setdefault(parts[0], (role, n))
        if first[0] != role:
            raise ClientsError(f"{source} line {n}: {parts[0]!r} is a {role} here but a "
                               f"{first[0]} on line {first[1]}: a name has one role")
        entries.append(Entry(parts[0], bytes.fromhex(parts[1]), role))
    return entries


def read(path: Path, what: str = "MEDCAST_CLIENTS_FILE") -> tuple[list[Entry], tuple[int, ...]]:
    """The entries and the file's identity (mtime, size, inode); ClientsError when unsafe or bad."""
    st = check_private(path, what)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ClientsError(f"{what}={str(path)!r}: cannot read ({exc})") from exc
    return parse(text, f"{what}={str(path)!r}"), (st.st_mtime_ns, st.st_size, st.st_ino)


class Clients:
    """The keys in force: `lookup(key)` → its entry (name and role), or None."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries, self._identity = read(path)  # at start, a bad file is fatal
        self._checked = time.monotonic()
        self._lock = threading.Lock()
        logger.info("client keys: %d key(s) of %d client(s) from %s", len(self.entries),
                    len({e.name for e in self.entries}), path)

    def reload(self) -> bool:
        """Re-read the file now; False (keys unchanged, error logged) when it is invalid."""
        with self._lock:
            self._checked = time.monotonic()
            try:
                entries, identity = read(self.path)
            except ClientsError as exc:
                logger.error("client keys NOT reloaded, the previous %d stay in force: %s",
                             len(self.entries), exc)
                return False
            self.entries, self._identity = entries, identity
        logger.info("client keys reloaded: %d key(s)", len(entries))
        return True

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked < RECHECK_S:
            return
        self._checked = now
        try:
            st = self.path.stat()
            identity = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            identity = ()
        if identity != self._identity:
            self.reload()

    def lookup(self, key: str | None) -> Entry | None:
        self._maybe_reload()
        if key is None:
            return None
        digest = hashlib.sha256(key.encode()).digest()
        found = None
        for entry in self.entries:  # no early exit: the time does not depend on the match
            if hmac.compare_digest(digest, entry.digest):
                found = entry
        return found

    def name_of(self, key: str | None) -> str | None:
        """The name whose key `key` is (a client's or an auditor's), or None."""
        entry = self.lookup(key)
        return entry.name if entry is not None else None


# ---- `python -m serve keys` -----------------------------------------------------------------


def _write_private(path: Path, text: str) -> None:
    """Replace the file atomically with mode 600 (a crash leaves the old or the new file)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def add_key(path: Path, name: str, role: str | None = None) -> str:
    """A new random key for `name`, its hash appended to the file (created with mode 600).
    `role`: CLIENT or AUDITOR; None: the name's role if it has keys already, else CLIENT."""
    if not NAME.fullmatch(name):
        raise ClientsError(f"client name {name!r}: use 1-100 letters, digits, . _ @ - "
                           "(starting with a letter or digit)")
    if role is not None and role not in ROLES:
        raise ClientsError(f"role {role!r}: expected one of {', '.join(ROLES)}")
    text, known = "", None
    if path.exists():
        entries, _ = read(path, "clients file")  # refuse to extend an unsafe or broken file
        known = next((e.role for e in entries if e.name == name), None)
        text = path.read_text()
        if text and not text.endswith("\n"):
            text += "\n"
    elif not path.parent.is_dir():
        raise ClientsError(f"clients file {str(path)!r}: folder {str(path.parent)!r} missing")
    if known is not None and role not in (None, known):
        raise ClientsError(f"{name!r} is a {known}: a name has one role (revoke its keys, or "
                           "choose another name)")
    role = role or known or CLIENT
    key = secrets.token_urlsafe(32)
    while key.startswith("-"):  # 1 in 64: `keys revoke --key KEY` would read it as an option
        key = secrets.token_urlsafe(32)
    _write_private(path, f"{text}{name} {key_hash(key)}{'' if role == CLIENT else f' role={role}'}\n")
    return key


def revoke(path: Path, name: str, key: str | None = None) -> int:
    """Remove the keys of `name` (only `key` when given); how many were removed."""
    read(path, "clients file")
    kept, removed = [], 0
    wanted = key_hash(key) if key is not None else None
    for line in path.read_text().splitlines():
        parts = line.split()
        if (len(parts) in (2, 3) and not line.lstrip().startswith("#") and parts[0] == name
                and (wanted is None or parts[1].lower() == wanted)):
            removed += 1
            continue
        kept.append(line)
    if removed:
        _write_private(path, "".join(f"{line}\n" for line in kept))
    return removed
