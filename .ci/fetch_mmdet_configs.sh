#!/usr/bin/env bash
# Fetch MMDetection's whole config trees (Apache-2.0) for the corpus tests
# tests/unit/detcore/test_mmdet_corpus.py (2.x) and test_mmdet3_corpus.py (3.x): the wheels from
# PyPI (no dependencies, nothing installed), each checked against its sha256, and their
# mmdet/.mim/configs unpacked to .cache/mmdet/configs (2.28.2, about 666 configs) and
# .cache/mmdet3/configs (3.3.0, about 869).
set -euo pipefail
cd "$(dirname "$0")/.."

fetch() {  # fetch VERSION SHA256 DEST
    local version=$1 sha=$2 dest=$3
    local wheel=$dest/mmdet-$version-py3-none-any.whl
    mkdir -p "$dest"
    [ -f "$wheel" ] || python3 -m pip download -q --no-deps --only-binary=:all: -d "$dest" "mmdet==$version"
    echo "$sha  $wheel" | sha256sum -c --quiet -
    if [ "$(cat "$dest/configs/.wheel-sha256" 2>/dev/null)" = "$sha" ]; then  # already unpacked: leave it be
        echo "MMDetection $version configs: $(find "$dest/configs" -name '*.py' | wc -l) files in $dest/configs"
        return
    fi
    rm -rf "$dest/configs.tmp" && mkdir "$dest/configs.tmp"
    python3 - "$wheel" "$dest/configs.tmp" <<'PY'
import os, sys, zipfile
prefix = "mmdet/.mim/configs/"
with zipfile.ZipFile(sys.argv[1]) as wheel:
    for name in wheel.namelist():
        if name.startswith(prefix) and not name.endswith("/") and ".." not in name.split("/"):
            target = sys.argv[2] + "/" + name[len(prefix):]
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with wheel.open(name) as src, open(target, "wb") as out:
                out.write(src.read())
PY
    echo "$sha" > "$dest/configs.tmp/.wheel-sha256"
    rm -rf "$dest/configs" && mv "$dest/configs.tmp" "$dest/configs"
    echo "MMDetection $version configs: $(find "$dest/configs" -name '*.py' | wc -l) files in $dest/configs"
}

fetch 2.28.2 30ac4dc275f838397872a4d43f77541e46cf8dc8431f796ddf10d7e4adfd9fe4 .cache/mmdet
fetch 3.3.0 2e23e291281ac57e7dccf8678e957da45fbe560ce78a1f5ded6afeccd3730f17 .cache/mmdet3
