#!/usr/bin/env bash
# PUT/GET throughput of 1 MiB objects against Garage and moto on loopback: s3fs's S3
# client (cargo bench --bench store) and, as a peer in the same run, boto3 with the same
# object size, count and parallelism.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${S3FS_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/s3fs-tests}

envfile=$(mktemp "${TMPDIR:-/tmp}/s3fs-bench-env.XXXXXX")
cleanup() { bash tests/servers/stop.sh "$envfile" || true; rm -f "$envfile"; }
trap cleanup EXIT
bash tests/servers/start.sh "$envfile"
set -a
# shellcheck disable=SC1090
. "$envfile"
set +a

echo "== s3fs store client"
cargo bench --bench store 2>/dev/null

echo "== boto3 (peer)"
"$CACHE/moto-venv/bin/python" - <<'PY'
import os, time, concurrent.futures as cf
import boto3
from botocore.config import Config

OBJECT, COUNT = 1 << 20, 128
body = bytes((i * 7 + i // 4096) & 0xFF for i in range(OBJECT))
for server in ("GARAGE", "MOTO"):
    url = os.environ[f"S3FS_TEST_{server}_URL"]          # s3c://HOST:PORT/BUCKET
    hostport, bucket = url[len("s3c://"):].rstrip("/").split("/", 1)
    opts = os.environ[f"S3FS_TEST_{server}_OPTIONS"]
    region = "us-east-1"
    for o in opts.split(","):
        if o.startswith("sig-region="):
            region = o.split("=", 1)[1]
    s3 = boto3.client("s3", endpoint_url=f"http://{hostport}", region_name=region,
                      aws_access_key_id=os.environ[f"S3FS_TEST_{server}_LOGIN"],
                      aws_secret_access_key=os.environ[f"S3FS_TEST_{server}_PASSWORD"],
                      config=Config(s3={"addressing_style": "path"}, max_pool_connections=64,
                                    retries={"max_attempts": 1}))
    for parallel in (1, 8, 32):
        keys = [f"bench/boto-{parallel}-{i}" for i in range(COUNT)]
        def run(fn):
            t = time.monotonic()
            with cf.ThreadPoolExecutor(parallel) as ex:
                list(ex.map(fn, keys))
            return COUNT * OBJECT / (time.monotonic() - t) / 1e6
        put = run(lambda k: s3.put_object(Bucket=bucket, Key=k, Body=body))
        get = run(lambda k: s3.get_object(Bucket=bucket, Key=k)["Body"].read())
        print(f"{server.lower():<8} parallel {parallel:>2}: PUT {put:7.1f} MB/s   GET {get:7.1f} MB/s   (1 MiB objects x {COUNT})")
        for k in keys:
            s3.delete_object(Bucket=bucket, Key=k)
PY
