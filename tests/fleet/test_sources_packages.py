"""Packages from artifact manifests and remote repositories, through a real runtime and
real servers: the version policy, failover, verification, the cache, and the faults."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from exthandler import RuntimeConfig, open_runtime, parse_goal_state
from exthandler._model import HandlerName, Version
from exthandler._packages.cache import PackageCache, file_digest
from exthandler._report.view import InstanceView
from tests.fleet.sources_support import (
    Fault,
    FileServer,
    package_bytes,
    sha256_line,
    version_manifest,
)
from tests.servers import Azurite, MotoS3, unique_name

pytestmark = pytest.mark.anyio

HANDLER = "Example.Fleet.Runner"


@pytest.fixture
def ops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp_path / "ops.log"
    monkeypatch.setenv("EXTHANDLER_TEST_OPS", str(log))
    return log


def config(tmp_path: Path, *repositories: Any) -> RuntimeConfig:
    boot = tmp_path / "boot_id"
    boot.write_text("boot-1\n")
    return RuntimeConfig(
        state_dir=tmp_path / "state",
        repositories=list(repositories),
        load_entry_points=False,
        boot_id_path=boot,
    )


def goal(version: str = "1.0", *, id: str = "g1", **properties: Any) -> Any:
    extension = {
        "name": "runner",
        "publisher": "Example.Fleet",
        "type": "Runner",
        "typeHandlerVersion": version,
        "settings": {"n": id},
        **properties,
    }
    return parse_goal_state(json.dumps({"id": id, "extensions": [extension]}))


def status(view: InstanceView, name: str = "runner") -> tuple[str, str, str]:
    ext = view.extension(name)
    assert ext is not None, view
    return ext.type_handler_version, ext.statuses[0].code, ext.statuses[0].message


def ops_seen(log: Path) -> list[str]:
    if not log.exists():
        return []
    return [line[3:] for line in log.read_text().splitlines() if line.startswith("op=")]


def assert_nowhere_in(root: Path, secret: str) -> None:
    """No file under `root` (the state dir: log, view, journal, cache) holds `secret`."""
    for directory, _, files in os.walk(root):
        for name in files:
            data = (Path(directory) / name).read_bytes()
            assert secret.encode() not in data, f"{directory}/{name} holds a credential"


def serve_packages(http: FileServer, tmp_path: Path, *versions: str) -> dict[str, bytes]:
    packages = {}
    for version in versions:
        data = package_bytes(tmp_path, HANDLER, version)
        http.files[f"/pkgs/{HANDLER}__{version}.zip"] = data
        packages[version] = data
    http.files["/manifest.xml"] = version_manifest(
        *((v, [http.url(f"/pkgs/{HANDLER}__{v}.zip")]) for v in versions)
    )
    return packages


# -- the manifest path ----------------------------------------------------------------------


async def test_manifest_version_policy_download_and_cache(
    tmp_path: Path, http: FileServer, ops: Path
) -> None:
    serve_packages(http, tmp_path, "1.0.0", "1.1.0", "2.0.0")
    location = http.url("/manifest.xml")
    async with open_runtime(config(tmp_path)) as runtime:
        view = await runtime.apply(goal(location=location, autoUpgradeMinorVersion=True))
        # Minor upgrades opted in: the highest 1.x; a major version is never crossed.
        assert status(view)[:2] == ("1.1.0", "ProvisioningState/succeeded")
        assert http.count(f"/pkgs/{HANDLER}__1.1.0.zip") == 1
        assert http.count(f"/pkgs/{HANDLER}__1.0.0.zip") == 0
        manifest_reads = http.count("/manifest.xml")
        # A new goal state: the manifest is asked again (conditionally), the package not.
        view = await runtime.apply(goal(location=location, autoUpgradeMinorVersion=True, id="g2"))
        assert status(view)[:2] == ("1.1.0", "ProvisioningState/succeeded")
        assert http.count("/manifest.xml") == manifest_reads + 1
        assert http.requests[-1].status in (304, 200)
        assert [r.status for r in http.requests if r.path == "/manifest.xml"][-1] == 304
        # Removed, then requested again: installed from the cache, never downloaded twice.
        await runtime.apply(parse_goal_state(json.dumps({"id": "g3", "extensions": []})))
        assert not (tmp_path / "state" / f"{HANDLER}-1.1.0").exists()
        view = await runtime.apply(goal(location=location, autoUpgradeMinorVersion=True, id="g4"))
        assert status(view)[:2] == ("1.1.0", "ProvisioningState/succeeded")
    assert http.count(f"/pkgs/{HANDLER}__1.1.0.zip") == 1
    assert ops_seen(ops) == [
        "install",
        "enable",
        "enable",
        "disable",
        "uninstall",
        "install",
        "enable",
    ]
    cache = tmp_path / "state" / ".exthandler" / "packages"
    assert len(os.listdir(cache / "objects")) == 1
    assert os.listdir(cache / "names") == [f"{HANDLER}__1.1.0.zip"]


async def test_manifest_wins_over_repositories(tmp_path: Path, http: FileServer, ops: Path) -> None:
    serve_packages(http, tmp_path, "1.0.0")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / f"{HANDLER}__1.0.5.zip").write_bytes(package_bytes(tmp_path, HANDLER, "1.0.5"))
    async with open_runtime(config(tmp_path, repo)) as runtime:
        view = await runtime.apply(goal(location=http.url("/manifest.xml")))
    assert status(view)[:2] == ("1.0.0", "ProvisioningState/succeeded")


async def test_failover_locations_and_uris(tmp_path: Path, http: FileServer, ops: Path) -> None:
    data = package_bytes(tmp_path, HANDLER, "1.0.0")
    http.files["/good/pkg.zip"] = data
    http.files["/good/pkg.zip.sha256"] = sha256_line(data, "pkg.zip")
    http.files["/backup/manifest.xml"] = version_manifest(
        ("1.0.0", [http.url("/gone/pkg.zip"), http.url("/good/pkg.zip")])
    )
    http.faults["/manifest.xml"] = Fault(status=500)
    async with open_runtime(config(tmp_path)) as runtime:
        view = await runtime.apply(
            goal(
                location=http.url("/manifest.xml"),
                failoverLocations=[http.url("/missing.xml"), http.url("/backup/manifest.xml")],
            )
        )
    assert status(view)[:2] == ("1.0.0", "ProvisioningState/succeeded")
    assert http.count("/manifest.xml") == 1
    assert http.count("/missing.xml") == 1
    assert http.count("/gone/pkg.zip") == 1
    assert http.count("/good/pkg.zip.sha256") == 1


async def test_manifest_nowhere_is_1001_without_credentials(
    tmp_path: Path, http: FileServer, ops: Path
) -> None:
    http.faults["/manifest.xml"] = Fault(status=503)
    location = http.url("/manifest.xml") + "?token=S3CR3T&x=1"
    async with open_runtime(config(tmp_path)) as runtime:
        view = await runtime.apply(goal(location=location, failoverLocations=[http.url("/no.xml")]))
    _, code, message = status(view)
    assert code == "ProvisioningState/failed/1001"
    assert "HTTP 503" in message
    assert "HTTP 404" in message
    assert "S3CR3T" not in message
    assert_nowhere_in(tmp_path / "state", "S3CR3T")
    assert ops_seen(ops) == []


async def test_manifest_listing_a_missing_package_is_1004(
    tmp_path: Path, http: FileServer, ops: Path
) -> None:
    http.files["/manifest.xml"] = version_manifest(
        ("1.0.0", [http.url("/pkgs/none.zip") + "?sv=2020&sig=PKGSECRET"])
    )
    async with open_runtime(config(tmp_path)) as runtime:
        view = await runtime.apply(goal(location=http.url("/manifest.xml")))
    _, code, message = status(view)
    assert code == "ProvisioningState/failed/1004"
    # A query with `sv` and `sig` reads as an Azurite-style blob URL: a missing blob.
    assert "not found" in message
    assert "PKGSECRET" not in message
    assert "sig=***" in message


async def test_bytes_changed_after_the_sidecar_are_refused(
    tmp_path: Path, http: FileServer, ops: Path
) -> None:
    packages = serve_packages(http, tmp_path, "1.0.0")
    name = f"/pkgs/{HANDLER}__1.0.0.zip"
    http.files[name + ".sha256"] = sha256_line(packages["1.0.0"], "x.zip")
    http.files[name] = package_bytes(tmp_path / "other", HANDLER, "1.0.0", enable="exit 9")
    async with open_runtime(config(tmp_path)) as runtime:
        view = await runtime.apply(goal(location=http.url("/manifest.xml")))
    _, code, message = status(view)
    assert code == "ProvisioningState/failed/1004"
    assert "does not match its sidecar" in message
    assert ops_seen(ops) == []
    assert not (tmp_path / "state" / ".exthandler" / "packages" / "names").exists()


async def test_download_cut_short_then_store_back(
    tmp_path: Path, http: FileServer, ops: Path
) -> None:
    serve_packages(http, tmp_path, "1.0.0")
    name = f"/pkgs/{HANDLER}__1.0.0.zip"
    http.faults[name] = Fault(truncate=64)
    async with open_runtime(config(tmp_path)) as runtime:
        view = await runtime.apply(goal(location=http.url("/manifest.xml")))
        assert status(view)[1] == "ProvisioningState/failed/1004"
        del http.faults[name]  # the store is back
        view = await runtime.apply(goal(location=http.url("/manifest.xml"), id="g2"))
    assert status(view)[:2] == ("1.0.0", "ProvisioningState/succeeded")
    assert ops_seen(ops) == ["install", "enable"]
    downloads = tmp_path / "state" / ".exthandler" / "downloads"
    assert [n for n in os.listdir(downloads) if n.endswith(".part")] == []


# -- remote repositories -----------------------------------------------------------------


async def test_http_repository_through_index_json(
    tmp_path: Path, http: FileServer, ops: Path
) -> None:
    data = package_bytes(tmp_path, HANDLER, "1.0.0")
    http.files[f"/repo/{HANDLER}__1.0.0.zip"] = data
    http.files[f"/repo/{HANDLER}__1.0.0.zip.sha256"] = sha256_line(data, "x")
    http.files["/repo/index.json"] = json.dumps(
        [f"{HANDLER}__1.0.0.zip", f"{HANDLER}__1.0.0.zip.sha256"]
    ).encode()
    async with open_runtime(config(tmp_path, http.url("/repo/"))) as runtime:
        view = await runtime.apply(goal())
    assert status(view)[:2] == ("1.0.0", "ProvisioningState/succeeded")


async def test_s3_repository_listed_and_verified(
    tmp_path: Path, moto_s3: MotoS3, ops: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in moto_s3.environment().items():
        monkeypatch.setenv(key, value)
    bucket = unique_name("repo")
    client = moto_s3.client()  # type: ignore[no-untyped-call]
    client.create_bucket(Bucket=bucket)
    good = package_bytes(tmp_path, HANDLER, "1.0.0")
    client.put_object(Bucket=bucket, Key=f"pkgs/{HANDLER}__1.0.0.zip", Body=good)
    client.put_object(
        Bucket=bucket, Key=f"pkgs/{HANDLER}__1.0.0.zip.sha256", Body=sha256_line(good, "x")
    )
    client.put_object(Bucket=bucket, Key=f"pkgs/{HANDLER}__1.1.0.zip", Body=b"not a zip")
    client.put_object(
        Bucket=bucket, Key=f"pkgs/{HANDLER}__1.1.0.zip.sha256", Body=sha256_line(good, "x")
    )
    async with open_runtime(config(tmp_path, f"s3://{bucket}/pkgs")) as runtime:
        view = await runtime.apply(goal())
        assert status(view)[:2] == ("1.0.0", "ProvisioningState/succeeded")
        view = await runtime.apply(goal("1.1", id="g2"))
    # 1.1.0's bytes do not match its sidecar: refused, and 1.0.0 stays.
    version, code, message = status(view)
    assert code == "ProvisioningState/failed/1004"
    assert "does not match its sidecar" in message
    assert version == "1.0.0"
    assert (tmp_path / "state" / f"{HANDLER}-1.0.0").is_dir()


async def test_azurite_manifest_and_packages_with_sas(
    tmp_path: Path, azurite: Azurite, ops: Path
) -> None:
    container = unique_name("artifacts")
    azurite.create_container(container)
    data = package_bytes(tmp_path, HANDLER, "1.2.0")
    azurite.put_blob(container, f"pkgs/{HANDLER}__1.2.0", data)
    azurite.put_blob(
        container,
        "manifest.xml",
        version_manifest(("1.2.0", [azurite.url(container, f"pkgs/{HANDLER}__1.2.0")])),
    )
    location = azurite.url(container, "manifest.xml")
    async with open_runtime(config(tmp_path)) as runtime:
        view = await runtime.apply(goal("1.2", location=location))
    assert status(view)[:2] == ("1.2.0", "ProvisioningState/succeeded")
    signature = azurite.account_sas().split("sig=")[1].split("&")[0]
    assert_nowhere_in(tmp_path / "state", signature)


# -- the cache -----------------------------------------------------------------------------


def test_cache_evicts_versions_no_longer_installed_first(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    cache = PackageCache(root=state / "packages", state_root=state, limit=250)
    handler = HandlerName.parse(HANDLER)
    for index, version in enumerate(["1.0.0", "1.1.0", "1.2.0"]):
        part = tmp_path / f"p{index}"
        part.write_bytes(bytes([index]) * 100)
        import hashlib

        digest = hashlib.sha256(part.read_bytes()).hexdigest()
        if version == "1.0.0":
            (state / f"{HANDLER}-1.0.0").mkdir()  # installed: kept whatever its age
        cache.add(handler, Version.parse(version), part, digest)
    # 300 bytes > 250: the oldest version not installed (1.1.0) went; 1.0.0 is installed.
    assert cache.lookup(handler, Version.parse("1.0.0")) is not None
    assert cache.lookup(handler, Version.parse("1.1.0")) is None
    assert cache.lookup(handler, Version.parse("1.2.0")) is not None
    assert sorted(os.listdir(cache.names)) == [f"{HANDLER}__1.0.0.zip", f"{HANDLER}__1.2.0.zip"]


def test_cache_refuses_an_object_altered_on_disk(tmp_path: Path) -> None:
    import hashlib

    cache = PackageCache(root=tmp_path / "packages", state_root=tmp_path)
    handler, version = HandlerName.parse(HANDLER), Version.parse("1.0.0")
    part = tmp_path / "part"
    part.write_bytes(b"zip bytes")
    kept = cache.add(handler, version, part, hashlib.sha256(b"zip bytes").hexdigest())
    os.chmod(kept, 0o600)
    kept.write_bytes(b"tampered")
    with pytest.raises(ValueError, match="altered"):
        cache.copy_to(kept, tmp_path / "out.zip")
    assert cache.lookup(handler, version) is None


async def test_local_manifest_and_paths(tmp_path: Path, ops: Path) -> None:
    data = package_bytes(tmp_path, HANDLER, "1.0.0")
    store = tmp_path / "store"
    store.mkdir()
    (store / "pkg.zip").write_bytes(data)
    (store / "manifest.xml").write_bytes(version_manifest(("1.0.0", [str(store / "pkg.zip")])))
    async with open_runtime(config(tmp_path)) as runtime:
        view = await runtime.apply(goal(location=(store / "manifest.xml").as_uri()))
        assert status(view)[:2] == ("1.0.0", "ProvisioningState/succeeded")
        # A cached package altered on disk is not used: it is downloaded again.
        objects = tmp_path / "state" / ".exthandler" / "packages" / "objects"
        (cached,) = objects.iterdir()
        cached.write_bytes(b"altered")
        await runtime.apply(parse_goal_state(json.dumps({"id": "none", "extensions": []})))
        view = await runtime.apply(goal(location=str(store / "manifest.xml"), id="g2"))
    assert status(view)[:2] == ("1.0.0", "ProvisioningState/succeeded")
    assert ops_seen(ops).count("install") == 2
    assert file_digest(cached) == cached.stem  # downloaded again, whole


async def test_remote_repository_missing_or_unlistable(
    tmp_path: Path, http: FileServer, ops: Path
) -> None:
    http.files["/bad/index.json"] = b"not json"
    async with open_runtime(config(tmp_path, http.url("/missing/"), http.url("/bad/"))) as runtime:
        view = await runtime.apply(goal())
    _, code, message = status(view)
    # The missing one lists as empty; the broken one is a problem: the versions on offer
    # are unknown (1001), not known to be missing.
    assert code == "ProvisioningState/failed/1001"
    assert "index.json: not valid JSON" in message


async def test_an_extension_being_removed_needs_no_manifest(
    tmp_path: Path, http: FileServer, ops: Path
) -> None:
    serve_packages(http, tmp_path, "1.0.0")
    async with open_runtime(config(tmp_path)) as runtime:
        await runtime.apply(goal(location=http.url("/manifest.xml")))
        reads = http.count("/manifest.xml")
        view = await runtime.apply(
            goal(location=http.url("/manifest.xml"), state="uninstall", id="g2")
        )
    assert http.count("/manifest.xml") == reads
    assert view.extensions == ()
    assert ops_seen(ops)[-1] == "uninstall"


# -- signatures ----------------------------------------------------------------------------


async def test_remote_packages_are_verified_like_local_ones(
    tmp_path: Path, http: FileServer, ops: Path
) -> None:
    from exthandler._testing._ca import SigningCA
    from tests.runtime.support import Packages

    ca = SigningCA(tmp_path / "ca")
    build = tmp_path / "signed"
    build.mkdir()
    signing = {"signingInfo": {"type": "Runner", "publisher": "Example.Fleet", "version": "1.0.0"}}
    package = Packages(repo=build).build(HANDLER, "1.0.0", entry=signing)
    ca.sign_package(package)
    signature = package.with_name(package.name + ".sig").read_text().strip()
    # A repository over HTTP whose index lists the .sig beside the zip.
    http.files[f"/repo/{package.name}"] = package.read_bytes()
    http.files[f"/repo/{package.name}.sig"] = signature.encode()
    http.files["/repo/index.json"] = json.dumps([package.name, package.name + ".sig"]).encode()
    # The same package named by a manifest, its signature in the goal state.
    http.files["/pkg.zip"] = package.read_bytes()
    http.files["/manifest.xml"] = version_manifest(("1.0.0", [http.url("/pkg.zip")]))
    policy = tmp_path / "policy.json"
    policy.write_text(
        json.dumps({"policyVersion": "0.1.0", "extensionPolicies": {"signatureRequired": True}})
    )

    def signed_config(name: str, *repositories: Any) -> RuntimeConfig:
        return config(tmp_path / name, *repositories).replace(
            policy=policy,
            trusted_roots=[ca.root.certificate_path],
        )

    (tmp_path / "repo-run").mkdir()
    async with open_runtime(signed_config("repo-run", http.url("/repo"))) as runtime:
        view = await runtime.apply(goal())
    assert status(view)[:2] == ("1.0.0", "ProvisioningState/succeeded")
    (tmp_path / "manifest-run").mkdir()
    async with open_runtime(signed_config("manifest-run")) as runtime:
        view = await runtime.apply(
            goal(location=http.url("/manifest.xml"), encodedSignature=signature)
        )
        assert status(view)[:2] == ("1.0.0", "ProvisioningState/succeeded")
    # Without a signature, the manifest's package is refused: nothing unsigned runs.
    unsigned = tmp_path / "unsigned-run"
    unsigned.mkdir()
    async with open_runtime(signed_config("unsigned-run")) as runtime:
        view = await runtime.apply(goal(location=http.url("/manifest.xml")))
    _, code, message = status(view)
    assert code == "ProvisioningState/failed/1004"
    assert "not signed" in message
