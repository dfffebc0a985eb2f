#!/usr/bin/env python3
"""Extracts the example Quadlet files from podman's documentation (podman-systemd.unit(5)) into
crates/tailpod-core/tests/quadlet/podman-docs/, one file each, which `quadsync check`'s model
must accept (crates/tailpod-core/tests/quadlet.rs).

Usage:
  scripts/podman-doc-examples.py PODMAN_GIT_DIR TAG OUT_DIR

An example is a fenced block that starts with a [Section] line, named by the nearest `NAME.EXT`
mentioned before it (Example `test.container`:); blocks without a name are skipped.
"""

import os
import re
import subprocess
import sys

DOC = "docs/source/markdown/podman-systemd.unit.5.md"
EXTENSIONS = ("container", "pod", "volume", "network", "kube", "image", "build", "artifact")


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    repo, tag, out = sys.argv[1:]
    text = subprocess.run(["git", "-C", repo, "show", f"{tag}:{DOC}"], check=True,
                          capture_output=True, text=True).stdout
    os.makedirs(out, exist_ok=True)
    name, count, used = None, 0, set()
    blocks = re.split(r"^```.*$", text, flags=re.M)
    # Even pieces are prose, odd ones fenced blocks.
    for index, piece in enumerate(blocks):
        if index % 2 == 0:
            names = re.findall(r"`([\w@.-]+\.(?:%s))`" % "|".join(EXTENSIONS), piece)
            name = names[-1] if names else None
            continue
        body = piece.strip("\n")
        if not name or not body.lstrip().startswith("["):
            continue
        stem, ext = name.rsplit(".", 1)
        file_name, n = name, 1
        while file_name in used:
            n += 1
            file_name = f"{stem}-{n}.{ext}"
        used.add(file_name)
        with open(os.path.join(out, file_name), "w") as f:
            f.write(f"# From podman {tag}'s podman-systemd.unit(5), by scripts/podman-doc-examples.py.\n")
            f.write(body + "\n")
        count += 1
        name = None
    print(f"{count} examples from podman {tag}", file=sys.stderr)


if __name__ == "__main__":
    main()
