"""Package repositories: listing, sidecar verification, and precedence between sources."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import zipfile
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest
from exthandler_sdk import ErrorCode

from exthandler._errors import NoEligibleVersionError, PackageError
from exthandler._model import HandlerName, Version
from exthandler._packages.manifest import HandlerManifest
from exthandler._packages.repository import (
    DirectoryRepository,
    Installed,
    PackageCatalog,
    PackageRef,
    PackageSource,
    RepositorySet,
    Workspace,
    package_file_name,
    parse_package_file_name,
)

HELLO = HandlerName.parse("Contoso.Hello")
OTHER = HandlerName.parse("aaa.Other")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def add_package(repo: Path, name: str, content: bytes = b"") -> Path:
    """A small zip called `name` in `repo`, distinct per `content`."""
    repo.mkdir(parents=True, exist_ok=True)
    path = repo / name
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("HandlerManifest.json", b"[]" + content)
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def v(text: str) -> Version:
    return Version.parse(text)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Contoso.Hello__1.0.zip", ("Contoso.Hello", "1.0")),
        ("Pub.Sub.Type__1.2.3.4.zip", ("Pub.Sub.Type", "1.2.3.4")),
        ("Pub.Type___1.2.zip", ("Pub.Type_", "1.2")),
        ("Pub.Type__1.zip", None),
        ("Pub.Type__1.0.0.0.0.zip", None),
        ("Type__1.0.zip", None),
        ("Pub.Type-1.0.zip", None),
        ("Pub.Type__1.0.ZIP", None),
        ("Pub.Type__1.0.zip.sha256", None),
        ("Pub.Type__v1.0.zip", None),
        ("Pub..Type__1.0.zip", None),
    ],
)
def test_parse_package_file_name(name: str, expected: tuple[str, str] | None) -> None:
    parsed = parse_package_file_name(name)
    if expected is None:
        assert parsed is None
    else:
        assert parsed is not None
        assert (str(parsed[0]), str(parsed[1])) == expected
        assert package_file_name(*parsed) == name


@pytest.mark.anyio
async def test_listing_ignores_junk(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    good = add_package(repo, "Contoso.Hello__1.0.zip")
    add_package(repo, "Contoso.Hello__1.10.zip")
    add_package(repo, "Contoso.Hello__1.2.zip")
    (repo / "Contoso.Hello__1.0.zip.sha256").write_text(digest(good) + "\n")
    (repo / "README.md").write_text("packages live here")
    (repo / "Contoso.Hello__2.0.zip").mkdir()
    for junk in ("Hello__1.0.zip", "Contoso.Hello__1.zip", "Contoso.Hello-1.0.zip", "x.zip"):
        add_package(repo, junk)
    refs = await DirectoryRepository(repo).list_packages()
    assert [(str(r.handler), str(r.version)) for r in refs] == [
        ("Contoso.Hello", "1.0"),
        ("Contoso.Hello", "1.10"),
        ("Contoso.Hello", "1.2"),
    ]
    assert refs[0].location == str(good.absolute())
    assert refs[0].file_name == "Contoso.Hello__1.0.zip"


@pytest.mark.anyio
async def test_missing_directory_lists_empty_but_cannot_fetch(tmp_path: Path) -> None:
    repo = DirectoryRepository(tmp_path / "absent")
    assert await repo.list_packages() == []
    ref = PackageRef(handler=HELLO, version=v("1.0"), location="anywhere")
    with pytest.raises(PackageError) as caught:
        await repo.fetch(ref, tmp_path / "dest.zip")
    assert caught.value.code == ErrorCode.PACKAGE_DOWNLOAD
    assert str(tmp_path / "absent") in caught.value.message
    assert "does not exist" in caught.value.message
    assert not (tmp_path / "dest.zip").exists()


@pytest.mark.anyio
async def test_repository_path_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "repo").write_text("not a directory")
    with pytest.raises(PackageError) as caught:
        await DirectoryRepository(tmp_path / "repo").list_packages()
    assert caught.value.code == ErrorCode.PACKAGE_DOWNLOAD
    assert "cannot be listed" in caught.value.message


@pytest.mark.anyio
async def test_fetch_without_sidecar(tmp_path: Path) -> None:
    source = add_package(tmp_path / "repo", "Contoso.Hello__1.0.zip")
    repo = DirectoryRepository(tmp_path / "repo")
    (ref,) = await repo.list_packages()
    dest = tmp_path / "downloads" / "deep" / "pkg.zip"
    assert await repo.fetch(ref, dest) == dest
    assert dest.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["pkg.zip"]


@pytest.fixture
def sha256sum_repo(tmp_path: Path) -> Path:
    """A repository whose one package has a sidecar written by the real `sha256sum`."""
    source = add_package(tmp_path / "repo", "Contoso.Hello__1.0.zip")
    sha256sum = shutil.which("sha256sum")
    if sha256sum is None:  # pragma: no cover - coreutils is everywhere this runs
        pytest.skip("sha256sum not installed")
    output = subprocess.run(
        [sha256sum, source.name], cwd=source.parent, check=True, capture_output=True
    ).stdout
    (source.parent / (source.name + ".sha256")).write_bytes(output)
    return source.parent


@pytest.mark.anyio
async def test_fetch_with_sha256sum_sidecar(tmp_path: Path, sha256sum_repo: Path) -> None:
    repo = DirectoryRepository(sha256sum_repo)
    (ref,) = await repo.list_packages()
    dest = await repo.fetch(ref, tmp_path / "pkg.zip")
    assert digest(dest) == digest(sha256sum_repo / "Contoso.Hello__1.0.zip")


@pytest.mark.anyio
@pytest.mark.parametrize("form", ["bare", "upper", "binary-mode", "no-newline"])
async def test_sidecar_forms(tmp_path: Path, form: str) -> None:
    source = add_package(tmp_path / "repo", "Contoso.Hello__1.0.zip")
    hexdigest = digest(source)
    text = {
        "bare": hexdigest,
        "upper": hexdigest.upper() + "\n",
        "binary-mode": f"{hexdigest} *{source.name}\n",
        "no-newline": f"  {hexdigest}  {source.name}",
    }[form]
    (source.parent / (source.name + ".sha256")).write_text(text)
    repo = DirectoryRepository(tmp_path / "repo")
    (ref,) = await repo.list_packages()
    await repo.fetch(ref, tmp_path / "pkg.zip")


@pytest.mark.anyio
async def test_sidecar_mismatch_refuses_the_package(tmp_path: Path) -> None:
    source = add_package(tmp_path / "repo", "Contoso.Hello__1.0.zip")
    wrong = "0" * 64
    (source.parent / (source.name + ".sha256")).write_text(f"{wrong}  {source.name}\n")
    repo = DirectoryRepository(tmp_path / "repo")
    (ref,) = await repo.list_packages()
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with pytest.raises(PackageError) as caught:
        await repo.fetch(ref, downloads / "pkg.zip")
    error = caught.value
    assert error.code == ErrorCode.PACKAGE_DOWNLOAD
    assert source.name in error.message
    assert wrong in error.message
    assert digest(source) in error.message
    assert list(downloads.iterdir()) == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    "content",
    [b"", b"   \n", b"not-a-digest  file.zip\n", b"abc123\n", b"\xff" * 64, b"0" * 5000],
)
async def test_unusable_sidecar_refuses_the_package(tmp_path: Path, content: bytes) -> None:
    source = add_package(tmp_path / "repo", "Contoso.Hello__1.0.zip")
    sidecar = source.parent / (source.name + ".sha256")
    sidecar.write_bytes(content)
    repo = DirectoryRepository(tmp_path / "repo")
    (ref,) = await repo.list_packages()
    with pytest.raises(PackageError) as caught:
        await repo.fetch(ref, tmp_path / "pkg.zip")
    assert caught.value.code == ErrorCode.PACKAGE_DOWNLOAD
    assert str(sidecar) in caught.value.message
    assert not (tmp_path / "pkg.zip").exists()


@pytest.mark.anyio
async def test_unreadable_sidecar_refuses_the_package(tmp_path: Path) -> None:
    source = add_package(tmp_path / "repo", "Contoso.Hello__1.0.zip")
    (source.parent / (source.name + ".sha256")).mkdir()
    repo = DirectoryRepository(tmp_path / "repo")
    (ref,) = await repo.list_packages()
    with pytest.raises(PackageError) as caught:
        await repo.fetch(ref, tmp_path / "pkg.zip")
    assert caught.value.code == ErrorCode.PACKAGE_DOWNLOAD
    assert "cannot be read" in caught.value.message


@pytest.mark.anyio
async def test_fetch_package_not_in_repository(tmp_path: Path) -> None:
    add_package(tmp_path / "repo", "Contoso.Hello__1.0.zip")
    repo = DirectoryRepository(tmp_path / "repo")
    ref = PackageRef(handler=HELLO, version=v("9.9"), location="elsewhere")
    with pytest.raises(PackageError) as caught:
        await repo.fetch(ref, tmp_path / "pkg.zip")
    assert caught.value.code == ErrorCode.PACKAGE_DOWNLOAD
    assert "Contoso.Hello__9.9.zip" in caught.value.message


@pytest.mark.anyio
async def test_fetch_ignores_the_location_it_is_given(tmp_path: Path) -> None:
    source = add_package(tmp_path / "repo", "Contoso.Hello__1.0.zip", b"real")
    decoy = add_package(tmp_path / "decoy", "Contoso.Hello__1.0.zip", b"decoy")
    repo = DirectoryRepository(tmp_path / "repo")
    ref = PackageRef(handler=HELLO, version=v("1.0"), location=str(decoy))
    dest = await repo.fetch(ref, tmp_path / "pkg.zip")
    assert dest.read_bytes() == source.read_bytes()


@pytest.mark.anyio
async def test_fetch_onto_a_directory_fails_cleanly(tmp_path: Path) -> None:
    add_package(tmp_path / "repo", "Contoso.Hello__1.0.zip")
    repo = DirectoryRepository(tmp_path / "repo")
    (ref,) = await repo.list_packages()
    dest = tmp_path / "downloads" / "pkg.zip"
    dest.mkdir(parents=True)
    with pytest.raises(PackageError) as caught:
        await repo.fetch(ref, dest)
    assert caught.value.code == ErrorCode.PACKAGE_DOWNLOAD
    assert list((tmp_path / "downloads").iterdir()) == [dest]


class FakeSource:
    """A source that is not a directory, as an HTTP repository would be."""

    def __init__(self, refs: Sequence[PackageRef]) -> None:
        self.refs = list(refs)
        self.fetched: list[PackageRef] = []

    async def list_packages(self) -> Sequence[PackageRef]:
        return self.refs

    async def install(self, ref: PackageRef, directory: Path, workspace: Workspace) -> Installed:
        self.fetched.append(ref)
        await anyio.Path(directory).mkdir()
        await anyio.Path(directory / "payload").write_bytes(ref.location.encode())
        return Installed(manifest=HandlerManifest(name=str(ref.handler)))


def ref(handler: HandlerName, version: str, location: str) -> PackageRef:
    return PackageRef(handler=handler, version=v(version), location=location)


@pytest.mark.anyio
async def test_repository_set_precedence_and_order(tmp_path: Path) -> None:
    first = FakeSource(
        [ref(HELLO, "1.0.0", "first"), ref(HELLO, "1.2", "first"), ref(OTHER, "2.0", "first")]
    )
    second = FakeSource(
        [
            ref(HELLO, "1.0", "second"),
            ref(HandlerName.parse("contoso.hello"), "1.2.0", "second"),
            ref(HELLO, "1.1", "second"),
        ]
    )
    sources: list[PackageSource] = [first, second]
    repos = RepositorySet(sources)
    listed = [(str(r.handler), str(r.version), r.location) for r in await repos.list_all()]
    assert listed == [
        ("aaa.Other", "2.0", "first"),
        ("Contoso.Hello", "1.0.0", "first"),
        ("Contoso.Hello", "1.1", "second"),
        ("Contoso.Hello", "1.2", "first"),
    ]
    assert await repos.list_packages() == await repos.list_all()
    catalog = await repos.catalog()
    assert catalog.available(HELLO) == [v("1.0"), v("1.1"), v("1.2")]
    assert catalog.available(HandlerName.parse("No.Such")) == []
    found = catalog.find(HELLO, v("1.1.0"))
    assert found.location == "second"
    assert catalog.find(HELLO, v("1.0")).location == "first"
    assert catalog.source_of(found) is second

    await repos.install(found, tmp_path / "dir", Workspace(tmp_path / "work"))
    assert (tmp_path / "dir" / "payload").read_bytes() == b"second"
    assert second.fetched == [found]
    assert first.fetched == []


@pytest.mark.anyio
async def test_repository_set_find_missing() -> None:
    repos = RepositorySet([FakeSource([ref(HELLO, "1.0", "a"), ref(HELLO, "1.3", "a")])])
    catalog = await repos.catalog()
    with pytest.raises(NoEligibleVersionError) as caught:
        catalog.find(HELLO, v("2.0"))
    assert isinstance(caught.value, LookupError)
    assert "Contoso.Hello 2.0" in str(caught.value)
    assert "1.0, 1.3" in str(caught.value)
    with pytest.raises(NoEligibleVersionError, match="available: none") as caught:
        catalog.find(OTHER, v("1.0"))
    assert "pip install" not in str(caught.value)


def test_a_missing_builtin_handler_names_the_distribution_to_install() -> None:
    catalog = PackageCatalog()
    custom_script = HandlerName.parse("microsoft.azure.extensions.customscript")
    with pytest.raises(NoEligibleVersionError) as caught:
        catalog.find(custom_script, v("2.1"))
    assert str(caught.value) == (
        "microsoft.azure.extensions.customscript 2.1 is not in any package repository"
        " (available: none); it is a built-in handler of exthandler-plugins:"
        ' pip install "exthandler[plugins]"'
    )


@pytest.mark.anyio
async def test_repository_set_install_of_unknown_ref(tmp_path: Path) -> None:
    repos = RepositorySet([FakeSource([])])
    with pytest.raises(PackageError) as caught:
        await repos.install(ref(HELLO, "1.0", "nowhere"), tmp_path / "dir", Workspace(tmp_path))
    assert caught.value.code == ErrorCode.PACKAGE_DOWNLOAD
    assert "Contoso.Hello__1.0.zip" in caught.value.message


@pytest.mark.anyio
async def test_repository_set_over_directories(tmp_path: Path) -> None:
    add_package(tmp_path / "a", "Contoso.Hello__1.0.zip", b"from a")
    add_package(tmp_path / "b", "Contoso.Hello__1.0.zip", b"from b")
    only_b = add_package(tmp_path / "b", "Contoso.Hello__1.1.zip", b"only b")
    repos = RepositorySet(
        [DirectoryRepository(tmp_path / "a"), DirectoryRepository(tmp_path / "b")]
    )
    catalog = await repos.catalog()
    assert catalog.find(HELLO, v("1.0")).location == str(tmp_path / "a" / "Contoso.Hello__1.0.zip")
    found = catalog.find(HELLO, v("1.1"))
    source = catalog.source_of(found)
    assert isinstance(source, DirectoryRepository)
    dest = await source.fetch(found, tmp_path / "pkg.zip")
    assert dest.read_bytes() == only_b.read_bytes()


def test_empty_catalog() -> None:
    catalog = PackageCatalog()
    assert catalog.available(HELLO) == []
    with pytest.raises(NoEligibleVersionError):
        catalog.find(HELLO, v("1.0"))


@pytest.fixture
def links_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A downloads dir on another file system: hard links fail with EXDEV."""

    def refuse(source: object, destination: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", refuse)


@pytest.mark.anyio
async def test_fetch_links_the_package_when_it_can(tmp_path: Path) -> None:
    source = add_package(tmp_path / "repo", "Contoso.Hello__1.0.zip")
    repo = DirectoryRepository(tmp_path / "repo")
    (ref,) = await repo.list_packages()
    dest = await repo.fetch(ref, tmp_path / "downloads" / "pkg.zip")
    assert dest.stat().st_ino == source.stat().st_ino  # nothing was copied
    dest.unlink()  # what the runtime does after extracting: the repository keeps its file
    assert source.is_file()


@pytest.mark.anyio
async def test_fetch_copies_across_file_systems(tmp_path: Path, links_refused: None) -> None:
    source = add_package(tmp_path / "repo", "Contoso.Hello__1.0.zip", b"payload" * 1000)
    (source.parent / (source.name + ".sha256")).write_text(digest(source))
    repo = DirectoryRepository(tmp_path / "repo")
    (ref,) = await repo.list_packages()
    dest = await repo.fetch(ref, tmp_path / "downloads" / "pkg.zip")
    assert dest.stat().st_ino != source.stat().st_ino
    assert dest.read_bytes() == source.read_bytes()
    assert [p.name for p in dest.parent.iterdir()] == ["pkg.zip"]


@pytest.mark.anyio
async def test_a_copied_package_that_mismatches_leaves_nothing(
    tmp_path: Path, links_refused: None
) -> None:
    source = add_package(tmp_path / "repo", "Contoso.Hello__1.0.zip")
    (source.parent / (source.name + ".sha256")).write_text("0" * 64)
    repo = DirectoryRepository(tmp_path / "repo")
    (ref,) = await repo.list_packages()
    downloads = tmp_path / "downloads"
    with pytest.raises(PackageError, match="does not match its sidecar"):
        await repo.fetch(ref, downloads / "pkg.zip")
    assert list(downloads.iterdir()) == []


@pytest.mark.anyio
async def test_a_package_others_may_write_is_copied_not_linked(tmp_path: Path) -> None:
    source = add_package(tmp_path / "repo", "Contoso.Hello__1.0.zip")
    source.chmod(0o666)  # writable by anyone: it could change after its digest is checked
    repo = DirectoryRepository(tmp_path / "repo")
    (ref,) = await repo.list_packages()
    dest = await repo.fetch(ref, tmp_path / "downloads" / "pkg.zip")
    assert dest.stat().st_ino != source.stat().st_ino
    assert dest.read_bytes() == source.read_bytes()


@pytest.mark.anyio
async def test_a_catalog_can_skip_a_source_that_cannot_be_listed(tmp_path: Path) -> None:
    add_package(tmp_path / "good", "Contoso.Hello__1.0.zip")
    (tmp_path / "bad").write_text("not a directory")
    sources = RepositorySet(
        [DirectoryRepository(tmp_path / "bad"), DirectoryRepository(tmp_path / "good")]
    )
    with pytest.raises(PackageError, match="cannot be listed"):
        await sources.catalog()
    catalog = await sources.catalog(skip_unlistable=True)
    assert catalog.available(HandlerName.parse("Contoso.Hello")) == [Version.parse("1.0")]
    (problem,) = catalog.problems
    assert str(tmp_path / "bad") in problem
