"""A real S3-compatible server on loopback for the tests: moto's server mode, which implements
conditional PutObject (If-None-Match: *).

moto cannot live in flexrl's environment (botocore needs python-dateutil < 3, the kubernetes
client pinned in constraints.txt needs >= 3), so it gets its own small virtual environment under
build/s3server/, made the first time a test needs it (about a minute, from the package index).
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / "build" / "s3server"
MOTO = "moto[server]==5.2.6"
PINS = str(Path(__file__).with_name("s3server-constraints.txt"))


def moto_server() -> Path:
    binary = VENV / "bin" / "moto_server"
    if not binary.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q", MOTO, "-c", PINS]
        subprocess.run(pip, check=True)
    return binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def s3_server(bucket: str = "flexrl", check_credentials: bool = False) -> Iterator[dict[str, str]]:
    """Start the server, create `bucket`, yield the environment that points flexrl at it.
    With `check_credentials` the server knows no access key at all (every request is refused
    as unauthorised) and no bucket is made."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    if check_credentials:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"  # moto: check signatures from the start
    process = subprocess.Popen(
        [str(moto_server()), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                request = urllib.request.Request(f"{endpoint}/{bucket}", method="PUT")
                urllib.request.urlopen(request, timeout=2)
                break
            except urllib.error.HTTPError:
                if check_credentials:
                    break  # it answers (and refuses)
                raise
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the S3 test server did not start") from None
                time.sleep(0.2)
        yield {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "flexrl-test",
            # random, so a test can look for it anywhere (a diff of this file included)
            "AWS_SECRET_ACCESS_KEY": secrets.token_hex(16),
            "AWS_REGION": "us-east-1",
        }
    finally:
        process.terminate()
        process.wait(timeout=10)
