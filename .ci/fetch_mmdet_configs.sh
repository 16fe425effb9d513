#!/usr/bin/env bash
# Fetch MMDetection's whole config tree (about 666 .py configs, Apache-2.0) for the corpus test
# tests/unit/detcore/test_mmdet_corpus.py: the mmdet 2.28.2 wheel from PyPI (no dependencies,
# nothing installed), checked against its sha256 and unpacked to .cache/mmdet/configs.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.cache/mmdet
wheel=$dest/mmdet-2.28.2-py3-none-any.whl
sha=30ac4dc275f838397872a4d43f77541e46cf8dc8431f796ddf10d7e4adfd9fe4
mkdir -p "$dest"
[ -f "$wheel" ] || python3 -m pip download -q --no-deps --only-binary=:all: -d "$dest" mmdet==2.28.2
echo "$sha  $wheel" | sha256sum -c --quiet -
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
rm -rf "$dest/configs" && mv "$dest/configs.tmp" "$dest/configs"
echo "MMDetection configs: $(find "$dest/configs" -name '*.py' | wc -l) files in $dest/configs"
