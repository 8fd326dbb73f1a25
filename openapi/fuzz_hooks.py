"""Schemathesis hooks for scripts/check-api-fuzz.sh: the module upload (application/wasm) and the
image import (application/x-tar) take raw bytes, serialized like application/octet-stream."""

import schemathesis

schemathesis.serializer.alias("application/wasm", "application/octet-stream")
schemathesis.serializer.alias("application/x-tar", "application/octet-stream")
