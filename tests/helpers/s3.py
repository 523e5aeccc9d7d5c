"""A real S3-compatible server on loopback for tests: moto's standalone server, started and stopped by the test.

`s3_server` (tests/conftest.py) yields its endpoint URL; `make_bucket(endpoint)` creates a fresh bucket and returns
its name; `s3_store_overrides(endpoint, bucket)` are the settings overrides that publish artifacts there."""

from __future__ import annotations

import socket
import uuid

DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                     "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto():
    """(server, endpoint URL): moto's ThreadedMotoServer on 127.0.0.1 at a free port."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server, f"http://127.0.0.1:{port}"


def make_bucket(endpoint: str, name: str | None = None) -> str:
    """Create a bucket on the server (a fresh name unless given) and return its name."""
    import boto3

    name = name or f"loopbot-test-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **_keys()).create_bucket(Bucket=name)
    return name


def s3_client(endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **_keys())


def s3_store_overrides(endpoint: str, bucket: str, prefix: str = "loopbot") -> dict:
    return {"storage.artifacts_url": f"s3://{bucket}/{prefix}", "storage.s3.endpoint_url": endpoint,
            "storage.s3.region": "us-east-1"}


def _keys() -> dict:
    return {"aws_access_key_id": DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]}
