"""Fetching the named data sets' official files, only ever for an explicit ``--download``.

A file is streamed into a temporary file beside its destination while its MD5 is computed, and renamed into place
only when that MD5 is the one its publishers list: an interrupted or altered download leaves nothing behind. MD5 is
what the data sets' authors publish; it identifies their files, it does not defend against whoever could also change
the published list. Archives are unpacked only after every member was checked by hand (plain files and folders,
inside the destination), and then under tarfile's ``"data"`` filter where this Python has it.
"""

from __future__ import annotations

import hashlib
import logging
import tarfile
import urllib.request
import zlib
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from capsrobust.errors import DataError
from capsrobust.runtime import atomic_write

log = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 60
#: No official file is larger than 200 MB; a server sending more than this is refused while it sends.
MAX_DOWNLOAD_BYTES = 1 << 30
CHUNK_BYTES = 1 << 20


def open_url(url: str) -> BinaryIO:
    """The body of ``url``: the one place that touches the network (tests replace it)."""
    return urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S)


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(url: str, path: Path, md5: str) -> Path:
    """``url`` saved as ``path`` if its MD5 is ``md5``; a file already there with that MD5 is kept as it is."""
    if path.is_file() and file_md5(path) == md5:
        log.info("%s is already there (MD5 %s)", path, md5)
        return path
    log.info("downloading %s into %s", url, path.parent)

    def write(temporary: Path) -> None:
        digest, size = hashlib.md5(usedforsecurity=False), 0
        with open_url(url) as response, temporary.open("wb") as out:
            while chunk := response.read(CHUNK_BYTES):
                size += len(chunk)
                if size > MAX_DOWNLOAD_BYTES:
                    raise DataError(f"{url} sent more than {MAX_DOWNLOAD_BYTES:,} bytes, more than any official "
                                    f"file; nothing was kept in {path.parent}")
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != md5:
            raise DataError(f"{url}: the download's MD5 is {digest.hexdigest()}, not the published {md5}; nothing "
                            f"was kept in {path.parent} (try again, or copy {path.name} there by hand)")

    try:
        atomic_write(path, write)
    except OSError as error:  # urllib's URLError and HTTPError, timeouts, a full disk
        raise DataError(f"downloading {url} into {path.parent} failed ({error}); "
                        f"copy {path.name} there by hand instead") from error
    return path


def extract_tar(archive: Path, into: Path) -> None:
    """Unpack ``archive`` into ``into`` after refusing, by hand, any member that is not a plain file or folder
    (links, devices) or whose name is absolute or climbs out with ``..``; nothing is written when one is found.

    The hand check stands on every Python; tarfile's ``"data"`` filter (Python 3.12, and 3.8.17 / 3.9.17 / 3.10.12 /
    3.11.4 on) is applied on top where it exists.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                name = PurePosixPath(member.name)
                if not (member.isfile() or member.isdir()) or name.is_absolute() or ".." in name.parts:
                    raise DataError(f"{archive}: member {member.name!r} is a link, a device or a path outside the "
                                    f"archive's folder; refused, nothing was unpacked (delete the archive)")
            if hasattr(tarfile, "data_filter"):
                tar.extractall(into, members=members, filter="data")
            else:  # pragma: no cover - Pythons before the filter backports; the hand check above stands alone
                tar.extractall(into, members=members)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise DataError(f"cannot unpack {archive} ({error}); delete it and run with --download again") from error
