"""A real S3-compatible server on loopback for the tests: moto's server mode, which implements
conditional PutObject (If-None-Match: *).

moto cannot live in flexrl's environment (botocore needs python-dateutil < 3, the kubernetes
client pinned in constraints.txt needs >= 3), so it gets its own small virtual environment under
build/s3server/, made the first time a test needs it (about a minute, from the package index).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / "build" / "s3server"
MOTO = "moto[server]==5.2.6"


def moto_server() -> Path:
    binary = VENV / "bin" / "moto_server"
    if not binary.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q", MOTO]
        subprocess.run(pip, check=True)
    return binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def s3_server(bucket: str = "flexrl") -> Iterator[dict[str, str]]:
    """Start the server, create `bucket`, yield the environment that points flexrl at it."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [str(moto_server()), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                request = urllib.request.Request(f"{endpoint}/{bucket}", method="PUT")
                urllib.request.urlopen(request, timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the S3 test server did not start") from None
                time.sleep(0.2)
        yield {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "flexrl-test",
            "AWS_SECRET_ACCESS_KEY": "flexrl-test-secret",
            "AWS_REGION": "us-east-1",
        }
    finally:
        process.terminate()
        process.wait(timeout=10)


__all__ = ["os", "s3_server"]
