"""Bundle containers: a directory, or a single deterministic tar archive of the same files.

A bundle holds ``policy.json``, ``events.jsonl``, ``checkpoints.jsonl`` and
``artifacts/NAME`` files. :func:`load_bundle` reads either form into a
:class:`BundleData` of raw bytes (the verifier never touches the disk again). An archive
must be exactly what :func:`to_archive` writes for its contents (ustar, sorted names,
mtime 0, uid/gid 0, mode 0644), so even a flipped padding byte is detected.
:func:`open_bundle` (the verifier's entry) streams both forms: an archive is scanned
member by member by :func:`scan_archive`, with the same canonical check, and its logs are
read from their place in the file.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

from custody.errors import TranscriptError

POLICY, EVENTS, CHECKPOINTS, ARTIFACTS = (
    "policy.json",
    "events.jsonl",
    "checkpoints.jsonl",
    "artifacts",
)
ARTIFACT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")


@dataclass(frozen=True, slots=True, kw_only=True)
class BundleData:
    """The raw bytes of a bundle. ``problems`` lists container-level defects."""

    policy: bytes
    events: bytes
    checkpoints: bytes
    artifacts: tuple[tuple[str, bytes], ...] = ()
    problems: tuple[str, ...] = field(default=())

    def artifact_map(self) -> dict[str, bytes]:
        return dict(self.artifacts)


def _unreadable(path: Path, exc: Exception | None = None) -> TranscriptError:
    return TranscriptError(
        f"Cannot read transcript bundle {path}",
        "Give a bundle directory or a bundle .tar archive."
        + (f" ({type(exc).__name__})" if exc else ""),
    )


def load_bundle(path: str | os.PathLike[str]) -> BundleData:
    """Read a bundle directory or archive.

    Raises:
        TranscriptError: the path is neither, or cannot be read.
    """
    p = Path(path)
    try:
        if p.is_dir():
            return _load_dir(p)
        raw = p.read_bytes()
    except OSError as exc:
        raise _unreadable(p, exc) from exc
    return load_archive_bytes(raw, where=str(p))


def _load_dir(p: Path) -> BundleData:
    problems: list[str] = []
    files = {}
    for name in (POLICY, EVENTS, CHECKPOINTS):
        f = p / name
        if f.is_file():
            files[name] = f.read_bytes()
        else:
            problems.append(f"{name} is missing")
            files[name] = b""
    arts, extra = _artifacts_of(p)
    problems += extra
    return BundleData(
        policy=files[POLICY],
        events=files[EVENTS],
        checkpoints=files[CHECKPOINTS],
        artifacts=tuple(arts),
        problems=tuple(problems),
    )


def _artifacts_of(p: Path) -> tuple[list[tuple[str, bytes]], list[str]]:
    """A bundle directory's artifacts, and its unexpected entries as problems."""
    problems: list[str] = []
    arts: list[tuple[str, bytes]] = []
    adir = p / ARTIFACTS
    if adir.is_dir():
        for f in sorted(adir.iterdir()):
            if not f.is_file() or not ARTIFACT_NAME.match(f.name):
                problems.append(f"unexpected entry artifacts/{f.name}")
                continue
            arts.append((f.name, f.read_bytes()))
    for f in sorted(p.iterdir()):
        if f.name not in (POLICY, EVENTS, CHECKPOINTS, ARTIFACTS):
            problems.append(f"unexpected file {f.name}")
    return arts, problems


def _twice(arts: list[tuple[str, bytes]]) -> list[str]:
    """An artifact name held by more than one member: readers that keep the last (or the
    first) would see different artifacts, so the archive is refused, whatever the order."""
    seen: set[str] = set()
    out = []
    for name, _blob in arts:
        if name in seen:
            out.append(f"archive member {ARTIFACTS}/{name} appears more than once")
        seen.add(name)
    return out


def load_archive_bytes(raw: bytes, *, where: str = "archive") -> BundleData:
    """Parse an archive produced by :func:`to_archive`.

    Raises:
        TranscriptError: the bytes are not a tar archive.
    """
    problems: list[str] = []
    files: dict[str, bytes] = {}
    arts: list[tuple[str, bytes]] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tf:
            for m in tf.getmembers():
                if not m.isfile():
                    problems.append(f"archive member {m.name} is not a regular file")
                    continue
                fh = tf.extractfile(m)
                if fh is None:  # tarfile gives None only for non-regular members
                    problems.append(f"archive member {m.name} is not a regular file")
                    continue
                content = fh.read()
                if m.name in (POLICY, EVENTS, CHECKPOINTS):
                    files[m.name] = content
                elif m.name.startswith(ARTIFACTS + "/") and ARTIFACT_NAME.match(m.name[10:]):
                    arts.append((m.name[10:], content))
                else:
                    problems.append(f"unexpected archive member {m.name}")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise _unreadable(Path(where), exc) from exc
    for name in (POLICY, EVENTS, CHECKPOINTS):
        if name not in files:
            problems.append(f"{name} is missing")
    problems += _twice(arts)
    data = BundleData(
        policy=files.get(POLICY, b""),
        events=files.get(EVENTS, b""),
        checkpoints=files.get(CHECKPOINTS, b""),
        artifacts=tuple(sorted(arts)),
        problems=tuple(problems),
    )
    if not problems and to_archive(data) != raw:
        problems.append("archive is not in the canonical container form")
        data = BundleData(
            policy=data.policy,
            events=data.events,
            checkpoints=data.checkpoints,
            artifacts=data.artifacts,
            problems=tuple(problems),
        )
    return data


def to_archive(data: BundleData) -> bytes:
    """The one canonical tar form of a bundle's files."""
    members = [(POLICY, data.policy), (EVENTS, data.events), (CHECKPOINTS, data.checkpoints)]
    members += [(f"{ARTIFACTS}/{n}", b) for n, b in sorted(data.artifacts)]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:", format=tarfile.USTAR_FORMAT) as tf:
        for name, blob in sorted(members):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime, ti.mode, ti.uid, ti.gid = len(blob), 0, 0o644, 0, 0
            ti.uname = ti.gname = ""
            tf.addfile(ti, io.BytesIO(blob))
    return out.getvalue()


def write_dir(data: BundleData, path: str | os.PathLike[str]) -> None:
    """Write *data* as a bundle directory (used by tools and fixtures, not the recorder).

    Raises:
        TranscriptError: the directory cannot be written.
    """
    p = Path(path)
    try:
        (p / ARTIFACTS).mkdir(parents=True, exist_ok=True)
        (p / POLICY).write_bytes(data.policy)
        (p / EVENTS).write_bytes(data.events)
        (p / CHECKPOINTS).write_bytes(data.checkpoints)
        for name, blob in data.artifacts:
            (p / ARTIFACTS / name).write_bytes(blob)
    except OSError as exc:
        raise TranscriptError(f"Cannot write bundle {p}", "Check the path and free space.") from exc


class BundleSource:
    """A bundle opened for one streaming pass: ``policy``, ``problems`` and ``artifacts``
    are read up front (small); ``events()`` and ``checkpoints()`` give the raw lines of the
    two logs, from the disk for a directory (so the verifier's memory does not grow with
    the transcript), from memory for :class:`BundleData` and archives."""

    def __init__(
        self,
        policy: bytes,
        problems: tuple[str, ...],
        artifacts: tuple[tuple[str, bytes], ...],
        *,
        data: BundleData | None = None,
        root: Path | None = None,
    ) -> None:
        self.policy, self.problems, self.artifacts = policy, problems, artifacts
        self._data, self._root = data, root

    def artifact_map(self) -> dict[str, bytes]:
        return dict(self.artifacts)

    def unreadable(self, exc: OSError) -> TranscriptError:
        """The error for a read that failed part way (the bundle cannot be checked)."""
        return _unreadable(self._root or Path("bundle"), exc)

    def _open(self, name: str, blob: bytes) -> BinaryIO:
        if self._root is None:
            return io.BytesIO(blob)
        p = self._root / name
        try:
            return open(p, "rb") if p.is_file() else io.BytesIO(b"")
        except OSError as exc:
            raise _unreadable(self._root, exc) from exc

    def events(self) -> BinaryIO:
        """``events.jsonl`` as a binary file (iterate it for raw lines; close it after)."""
        return self._open(EVENTS, self._data.events if self._data else b"")

    def checkpoints(self) -> BinaryIO:
        return self._open(CHECKPOINTS, self._data.checkpoints if self._data else b"")

    def events_size(self) -> int:
        if self._root is None:
            return len(self._data.events) if self._data else 0
        try:
            return (self._root / EVENTS).stat().st_size
        except OSError:
            return 0


def open_bundle(bundle: BundleData | str | os.PathLike[str]) -> BundleSource:
    """Open a bundle (a :class:`BundleData`, a directory or an archive) for streaming.

    An archive is scanned once, member by member (:func:`scan_archive`); its two logs are
    then read from their places in the file, so memory does not grow with the transcript.

    Raises:
        TranscriptError: a path was given and it cannot be read at all.
    """
    if isinstance(bundle, BundleData):
        return BundleSource(bundle.policy, bundle.problems, bundle.artifacts, data=bundle)
    p = Path(bundle)
    try:
        if not p.is_dir():
            return scan_archive(p)
        problems: list[str] = []
        for name in (POLICY, EVENTS, CHECKPOINTS):
            if not (p / name).is_file():
                problems.append(f"{name} is missing")
        policy = (p / POLICY).read_bytes() if (p / POLICY).is_file() else b""
        arts, extra = _artifacts_of(p)
        problems += extra
    except OSError as exc:
        raise _unreadable(p, exc) from exc
    return BundleSource(policy, tuple(problems), tuple(arts), root=p)


@dataclass(frozen=True, slots=True)
class _Member:
    name: str
    offset: int  # of its header block
    offset_data: int
    size: int
    blob: bytes | None  # read for policy and artifacts; None for the two logs


class _Region(io.RawIOBase):
    """``size`` bytes of an open file from ``start``, as a raw binary file; at the end it
    checks that the file still has the *stamp* it had when it was scanned."""

    def __init__(self, fh: BinaryIO, start: int, size: int, stamp: Stamp) -> None:
        self._fh, self._pos, self._left, self._stamp = fh, start, size, stamp

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = min(len(b), self._left)
        if n <= 0:
            if _stamp(os.fstat(self._fh.fileno())) != self._stamp:
                raise OSError("the archive changed while it was being verified")
            return 0
        self._fh.seek(self._pos)
        got = self._fh.readinto(memoryview(b)[:n])  # type: ignore[attr-defined]
        if not got:
            raise OSError(f"{self._left} bytes missing at offset {self._pos}")
        self._pos, self._left = self._pos + got, self._left - got
        return int(got)

    def close(self) -> None:
        self._fh.close()
        super().close()


Stamp = tuple[int, int, int, int, int]


def _stamp(st: os.stat_result) -> Stamp:
    """What must not change between the scan of an archive and the reads of its logs."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class ArchiveSource(BundleSource):
    """An archive bundle after :func:`scan_archive`: ``events()`` and ``checkpoints()``
    read each log from its place in the file (refused if the file changed since the scan)."""

    def __init__(
        self,
        path: Path,
        stamp: Stamp,
        policy: bytes,
        problems: tuple[str, ...],
        artifacts: tuple[tuple[str, bytes], ...],
        logs: dict[str, tuple[int, int]],
    ) -> None:
        super().__init__(policy, problems, artifacts)
        self._path, self._stamp, self._logs = path, stamp, logs

    def unreadable(self, exc: OSError) -> TranscriptError:
        return _unreadable(self._path, exc)

    def _log(self, name: str) -> BinaryIO:
        if name not in self._logs:
            return io.BytesIO(b"")
        start, size = self._logs[name]
        try:
            fh = open(self._path, "rb")  # noqa: SIM115 - closed by the returned reader
            if _stamp(os.fstat(fh.fileno())) != self._stamp:
                fh.close()
                raise OSError(f"{self._path} changed while it was being verified")
        except OSError as exc:
            raise _unreadable(self._path, exc) from exc
        return cast(BinaryIO, io.BufferedReader(_Region(fh, start, size, self._stamp), 1 << 16))

    def events(self) -> BinaryIO:
        return self._log(EVENTS)

    def checkpoints(self) -> BinaryIO:
        return self._log(CHECKPOINTS)

    def events_size(self) -> int:
        return self._logs.get(EVENTS, (0, 0))[1]


def scan_archive(path: str | os.PathLike[str]) -> ArchiveSource:
    """Read an archive bundle member by member (tarfile's streaming mode), keeping only
    ``policy.json`` and the artifacts, and check that the file is exactly what
    :func:`to_archive` writes for its members: the same problems as
    :func:`load_archive_bytes` on the whole file, without holding it.

    Raises:
        TranscriptError: the file is not a tar archive, or cannot be read.
    """
    p = Path(path)
    problems: list[str] = []
    members: list[_Member] = []
    try:
        with open(p, "rb") as fh:
            stamp = _stamp(os.fstat(fh.fileno()))
            try:
                with tarfile.open(fileobj=fh, mode="r|") as tf:
                    for m in tf:
                        if not m.isfile():
                            problems.append(f"archive member {m.name} is not a regular file")
                            continue
                        keep = m.name == POLICY or m.name.startswith(ARTIFACTS + "/")
                        blob = None
                        if keep:
                            got = tf.extractfile(m)
                            assert got is not None  # a regular file  # noqa: S101
                            blob = got.read()
                            if len(blob) != m.size:
                                raise tarfile.ReadError("unexpected end of data")
                        members.append(_Member(m.name, m.offset, m.offset_data, m.size, blob))
                end = fh.seek(0, os.SEEK_END)
                files: dict[str, _Member] = {}
                arts: list[tuple[str, bytes]] = []
                for mb in members:
                    if mb.name in (POLICY, EVENTS, CHECKPOINTS):
                        files[mb.name] = mb
                    elif mb.name.startswith(ARTIFACTS + "/") and ARTIFACT_NAME.match(mb.name[10:]):
                        arts.append((mb.name[10:], mb.blob or b""))
                    else:
                        problems.append(f"unexpected archive member {mb.name}")
                for name in (POLICY, EVENTS, CHECKPOINTS):
                    if name not in files:
                        problems.append(f"{name} is missing")
                problems += _twice(arts)
                if not problems and not _canonical(fh, members, end):
                    problems.append("archive is not in the canonical container form")
            except (tarfile.TarError, EOFError) as exc:
                raise _unreadable(p, exc) from exc
    except OSError as exc:
        raise _unreadable(p, exc) from exc
    pol = files.get(POLICY)
    logs = {n: (files[n].offset_data, files[n].size) for n in (EVENTS, CHECKPOINTS) if n in files}
    return ArchiveSource(
        p, stamp, (pol.blob or b"") if pol else b"", tuple(problems), tuple(sorted(arts)), logs
    )


def _canonical(fh: BinaryIO, members: list[_Member], end: int) -> bool:
    """Whether the file is byte for byte what :func:`to_archive` writes for *members*
    (regular files, each log once): their order, each header block, the zero padding,
    the two end blocks and the zero fill to a whole record. Only headers and padding are
    read; a member's content is its own by construction."""
    key = [(m.name, m.blob or b"") for m in members]
    if key != sorted(key):
        return False
    if sum(m.name in (POLICY, EVENTS, CHECKPOINTS) for m in members) != 3:
        return False
    pos = 0
    for m in members:
        ti = tarfile.TarInfo(m.name)
        ti.size, ti.mtime, ti.mode, ti.uid, ti.gid = m.size, 0, 0o644, 0, 0
        ti.uname = ti.gname = ""
        head = ti.tobuf(tarfile.USTAR_FORMAT, tarfile.ENCODING, "surrogateescape")
        if m.offset != pos or m.offset_data != pos + len(head):
            return False
        fh.seek(pos)
        if fh.read(len(head)) != head:
            return False
        pad = -m.size % tarfile.BLOCKSIZE
        fh.seek(m.offset_data + m.size)
        if fh.read(pad) != bytes(pad):
            return False
        pos = m.offset_data + m.size + pad
    total = pos + 2 * tarfile.BLOCKSIZE
    total += -total % tarfile.RECORDSIZE
    if end != total:
        return False
    fh.seek(pos)
    while pos < end:
        chunk = fh.read(min(1 << 16, end - pos))
        if not chunk or chunk.count(0) != len(chunk):
            return False
        pos += len(chunk)
    return True
