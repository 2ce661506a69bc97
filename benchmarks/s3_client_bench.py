"""obstore against fsspec/s3fs, the two maintained object-store libraries the store could use,
on the same S3 server (moto on loopback, tests/store/s3server.py), in one run.

s3fs cannot live in flexrl's environment (aiobotocore pins botocore, which needs
python-dateutil < 3; the kubernetes client flexrl pins needs >= 3), so both libraries run here
in a small environment of their own under build/s3clients/ (made on first use):

    python3 benchmarks/s3_client_bench.py

Measured: what each installs, import time, small objects (a manifest, a lease: 4 KiB) put and
got one after another, chunk-sized objects (1 MiB) put and got by 8 threads, and whether an
exclusive create (If-None-Match: *) is available, which commits need. Writes
benchmarks/results/s3_client_bench.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENV = REPO / "build" / "s3clients"
PACKAGES = ["obstore==0.12.1", "s3fs==2026.9.0"]

CLIENT = r"""
import json, os, sys, time
from concurrent.futures import ThreadPoolExecutor
lib = sys.argv[1]
t = time.perf_counter()
if lib == "obstore":
    import obstore
    from obstore.store import S3Store
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    store = S3Store("flexrl", endpoint=endpoint, client_options={"allow_http": True})
    put = lambda k, d: obstore.put(store, k, d)
    get = lambda k: bytes(obstore.get(store, k).bytes())
    def create(k, d):
        try:
            obstore.put(store, k, d, mode="create"); return True
        except obstore.exceptions.AlreadyExistsError:
            return False
else:
    import s3fs
    fs = s3fs.S3FileSystem(endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    put = lambda k, d: fs.pipe_file(f"flexrl/{k}", d)
    get = lambda k: fs.cat_file(f"flexrl/{k}")
    def create(k, d):
        try:
            fs.pipe_file(f"flexrl/{k}", d, mode="create"); return True
        except FileExistsError:
            return False
import_s = time.perf_counter() - t
small, big = os.urandom(4096), os.urandom(1 << 20)
t = time.perf_counter()
for i in range(200):
    put(f"{lib}/small/{i}", small)
put_small = 200 / (time.perf_counter() - t)
t = time.perf_counter()
for i in range(200):
    assert get(f"{lib}/small/{i}") == small
get_small = 200 / (time.perf_counter() - t)
pool = ThreadPoolExecutor(8)
t = time.perf_counter()
list(pool.map(lambda i: put(f"{lib}/big/{i}", big), range(64)))
put_big = 64 / (time.perf_counter() - t)
t = time.perf_counter()
list(pool.map(lambda i: get(f"{lib}/big/{i}"), range(64)))
get_big = 64 / (time.perf_counter() - t)
try:
    first = create(f"{lib}/versions/v1", b"one")
    second = create(f"{lib}/versions/v1", b"two")
    exclusive = first and not second and get(f"{lib}/versions/v1") == b"one"
except Exception as e:
    exclusive = f"no: {type(e).__name__}: {str(e).splitlines()[0][:80]}"
print(json.dumps(dict(import_s=import_s, put_small_per_s=put_small, get_small_per_s=get_small,
                      put_mib_per_s=put_big, get_mib_per_s=get_big, exclusive_create=exclusive)))
"""


def venv_python() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PACKAGES], check=True)
    return python


def installed(python: Path, package: str) -> list[str]:
    """The distributions `package` pulls in (itself included)."""
    code = (
        "import importlib.metadata as m, re, sys\n"
        "seen, todo = set(), [sys.argv[1]]\n"
        "while todo:\n"
        "    name = re.split(r'[ ;<>=!~\\[]', todo.pop())[0].lower().replace('_', '-')\n"
        "    if name in seen: continue\n"
        "    seen.add(name)\n"
        "    try: reqs = m.requires(name) or []\n"
        "    except m.PackageNotFoundError: continue\n"
        "    todo += [r for r in reqs if 'extra ==' not in r]\n"
        "print(' '.join(sorted(seen)))"
    )
    out = subprocess.run([str(python), "-c", code, package], capture_output=True, text=True)
    return out.stdout.split()


def main() -> None:
    sys.path.insert(0, str(REPO / "tests" / "store"))
    from s3server import s3_server

    python = venv_python()
    results = {}
    with s3_server() as env:
        for lib in ("obstore", "s3fs"):
            out = subprocess.run(
                [str(python), "-c", CLIENT, lib],
                env={**os.environ, **env},
                capture_output=True,
                text=True,
                check=True,
            )
            results[lib] = json.loads(out.stdout)
            results[lib]["installs"] = installed(python, lib)
    out_file = HERE / "results" / "s3_client_bench.json"
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(json.dumps(results, indent=1))
    print(f"{'':26}{'obstore':>12}{'s3fs':>12}")
    for key, unit in (
        ("import_s", "import (s)"),
        ("put_small_per_s", "4 KiB puts/s (1 thread)"),
        ("get_small_per_s", "4 KiB gets/s (1 thread)"),
        ("put_mib_per_s", "1 MiB puts/s (8 threads)"),
        ("get_mib_per_s", "1 MiB gets/s (8 threads)"),
    ):
        print(f"{unit:26}{results['obstore'][key]:>12.2f}{results['s3fs'][key]:>12.2f}")
    for lib in ("obstore", "s3fs"):
        print(f"{lib}: exclusive create: {results[lib]['exclusive_create']}")
        names = results[lib]["installs"]
        print(f"{lib}: installs {len(names)}: {' '.join(names)}")
    print(f"wrote {out_file}")


if __name__ == "__main__":
    main()
