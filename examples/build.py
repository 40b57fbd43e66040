"""Build the example handler packages into a package repository, reproducibly.

Every `examples/packages/<Publisher.Type>/<version>/` directory becomes
`examples/repo/<Publisher.Type>__<version>.zip` and its `sha256sum`-format sidecar
`<...>.zip.sha256`. Entries are sorted, dated 1980-01-01 00:00:00, deflated, and carry
fixed Unix permissions (0755 for files starting with `#!`, 0644 for the others), so the
same sources always give the same bytes.

    python examples/build.py            rebuild examples/repo (only changed files are written)
    python examples/build.py --check    exit 1 if examples/repo is not what a build would give

`--check` accepts a committed zip whose bytes differ only because another zlib compressed
it differently, as long as every entry (name, date, permissions, content) is the same and
its sidecar matches it. Standard library only: runs with any Python 3.11+.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import re
import stat
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
EPOCH = (1980, 1, 1, 0, 0, 0)
SCRIPT_MODE = 0o755
FILE_MODE = 0o644
_HANDLER_RE = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_\-]*(\.[A-Za-z0-9_][A-Za-z0-9_\-]*)+\Z")
_VERSION_RE = re.compile(r"\A[0-9]+(\.[0-9]+){1,3}\Z")
_OUTPUT_RE = re.compile(r"__[0-9.]+\.zip(\.sha256)?\Z")


class BuildError(Exception):
    """The package sources are not laid out as `<Publisher.Type>/<version>/`."""


def package_dirs(packages: Path) -> list[tuple[str, Path]]:
    """`(zip file name, source dir)` for every package under `packages`, sorted."""
    found: list[tuple[str, Path]] = []
    for handler_dir in sorted(p for p in packages.iterdir() if p.is_dir()):
        if not _HANDLER_RE.match(handler_dir.name):
            raise BuildError(f"{handler_dir}: not a handler name 'Publisher.Type'")
        for version_dir in sorted(p for p in handler_dir.iterdir() if p.is_dir()):
            if not _VERSION_RE.match(version_dir.name):
                raise BuildError(f"{version_dir}: not a version (e.g. 1.0.0)")
            found.append((f"{handler_dir.name}__{version_dir.name}.zip", version_dir))
    return found


def build_zip(source: Path) -> bytes:
    """The zip of everything under `source`, the same bytes every time."""
    files = sorted(
        (p for p in source.rglob("*") if not p.is_dir()),
        key=lambda p: p.relative_to(source).as_posix(),
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in files:
            name = path.relative_to(source).as_posix()
            if any(part.startswith(".") for part in Path(name).parts):
                continue  # editor and OS litter
            if path.is_symlink() or not path.is_file():
                raise BuildError(f"{path}: only regular files can be packaged")
            data = path.read_bytes()
            info = zipfile.ZipInfo(name, date_time=EPOCH)
            info.create_system = 3  # Unix, so that the permission bits are honoured
            info.compress_type = zipfile.ZIP_DEFLATED
            mode = SCRIPT_MODE if data.startswith(b"#!") else FILE_MODE
            info.external_attr = (stat.S_IFREG | mode) << 16
            archive.writestr(info, data, compresslevel=9)
    return buffer.getvalue()


def sidecar(name: str, data: bytes) -> bytes:
    """`sha256sum` output for a file called `name` holding `data`."""
    return f"{hashlib.sha256(data).hexdigest()}  {name}\n".encode()


def build_all(packages: Path) -> dict[str, bytes]:
    """Every output file of the repository, by name."""
    outputs: dict[str, bytes] = {}
    for zip_name, source in package_dirs(packages):
        data = build_zip(source)
        outputs[zip_name] = data
        outputs[zip_name + ".sha256"] = sidecar(zip_name, data)
    return outputs


def _entries(data: bytes) -> list[tuple[str, tuple[int, ...], int, bytes]] | None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return [
                (i.filename, i.date_time, i.external_attr, archive.read(i))
                for i in archive.infolist()
            ]
    except (zipfile.BadZipFile, EOFError, ValueError):
        return None


def stale_outputs(repo: Path, outputs: dict[str, bytes]) -> list[Path]:
    """Files in `repo` that look like built packages but no source builds any more."""
    if not repo.is_dir():
        return []
    return sorted(p for p in repo.iterdir() if _OUTPUT_RE.search(p.name) and p.name not in outputs)


def check(repo: Path, outputs: dict[str, bytes]) -> list[str]:
    """What in `repo` differs from a fresh build; empty when it is up to date."""
    problems = [f"{p}: no package builds it any more" for p in stale_outputs(repo, outputs)]
    for name, fresh in outputs.items():
        if name.endswith(".sha256"):
            continue
        path = repo / name
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        committed = path.read_bytes()
        if committed != fresh and _entries(committed) != _entries(fresh):
            problems.append(f"{path}: differs from a fresh build of its sources")
            continue
        side = repo / (name + ".sha256")
        if not side.is_file() or side.read_bytes() != sidecar(name, committed):
            problems.append(f"{side}: missing or does not match {name}")
    return problems


def write(repo: Path, outputs: dict[str, bytes]) -> list[Path]:
    """Bring `repo` up to date; return the files written or removed."""
    repo.mkdir(parents=True, exist_ok=True)
    changed = stale_outputs(repo, outputs)
    for path in changed:
        path.unlink()
    for name, data in outputs.items():
        path = repo / name
        if not path.is_file() or path.read_bytes() != data:
            path.write_bytes(data)
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if stale")
    parser.add_argument("--packages", type=Path, default=HERE / "packages")
    parser.add_argument("--repo", type=Path, default=HERE / "repo")
    args = parser.parse_args(argv)
    try:
        outputs = build_all(args.packages)
    except (BuildError, OSError) as exc:
        print(f"build.py: {exc}", file=sys.stderr)
        return 2
    if args.check:
        problems = check(args.repo, outputs)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("run `python examples/build.py` to rebuild", file=sys.stderr)
            return 1
        print(f"{args.repo}: up to date ({len(outputs) // 2} packages)")
        return 0
    for path in write(args.repo, outputs):
        print(f"updated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
