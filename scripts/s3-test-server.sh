#!/usr/bin/env bash
# An S3-compatible server on loopback for trying USE_S3=true by hand: moto's server
# (PyPI: moto[server]), in memory, gone when stopped (Ctrl-C). The tests do not need
# this script: shared/tests/support starts a server of their own on a free port.
#
#   scripts/s3-test-server.sh            # port 5000, bucket commcenter
#   PORT=9000 BUCKET=files scripts/s3-test-server.sh
#
# It creates the bucket once the server answers and prints the variables to export.

set -euo pipefail

port=${PORT:-5000}
bucket=${BUCKET:-commcenter}

# 5.2.2 or later: older ones answer CompleteMultipartUpload in XML S3 clients refuses.
if ! python3 -c '
import moto, sys
from moto.server import ThreadedMotoServer
sys.exit(tuple(int(p) for p in moto.__version__.split(".")[:3] if p.isdigit()) < (5, 2, 2))
' >/dev/null 2>&1; then
    echo "s3-test-server: moto 5.2.2 or later is not installed; run: python3 -m pip install 'moto[server]>=5.2.2,<6'" >&2
    exit 1
fi

# Once the server answers, create the bucket and say how to use it; meanwhile this
# process becomes the server, so Ctrl-C and SIGTERM reach it directly.
(
    for _ in $(seq 1 100); do
        if python3 - "$port" "$bucket" <<'PY' 2>/dev/null; then
import sys, urllib.request
port, bucket = sys.argv[1], sys.argv[2]
# moto accepts any credentials; a path-style PUT creates the bucket.
request = urllib.request.Request(f"http://127.0.0.1:{port}/{bucket}", method="PUT")
urllib.request.urlopen(request, timeout=1)
PY
            cat >&2 <<EOT
s3-test-server: moto on http://127.0.0.1:$port, bucket $bucket. In another shell:
  export USE_S3=true S3_BUCKET=$bucket S3_REGION=us-east-1 \\
         S3_ENDPOINT=http://127.0.0.1:$port S3_FORCE_PATH_STYLE=true \\
         AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
EOT
            exit 0
        fi
        sleep 0.1
    done
    echo "s3-test-server: the server did not answer; bucket $bucket not created" >&2
) &

exec moto_server -H 127.0.0.1 -p "$port"
