"""The storage servers the fleet tests rely on really serve their APIs."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from tests.servers import Azurite, MotoS3, unique_name


def test_azurite_round_trips_a_blob_through_a_sas_url(azurite: Azurite) -> None:
    container = unique_name("roundtrip")
    azurite.create_container(container)
    azurite.put_blob(container, "dir/goal.json", b'{"extensions": []}')
    data, headers = azurite.get_blob(container, "dir/goal.json")
    assert data == b'{"extensions": []}'
    assert headers["x-ms-blob-type"] == "BlockBlob"


def test_azurite_refuses_a_request_without_a_signature(azurite: Azurite) -> None:
    container = unique_name("nosas")
    azurite.create_container(container)
    azurite.put_blob(container, "secret", b"x")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(azurite.url(container, "secret", sas=False), timeout=30)
    refused.value.close()
    assert refused.value.code in (401, 403, 404)


def test_moto_serves_s3_objects(moto_s3: MotoS3) -> None:
    client = moto_s3.client()  # type: ignore[no-untyped-call]
    bucket = unique_name("bucket")
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="goal.json", Body=b"{}")
    assert client.get_object(Bucket=bucket, Key="goal.json")["Body"].read() == b"{}"
