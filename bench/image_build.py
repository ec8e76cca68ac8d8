"""Container image bench (issue 12): how long deploy/image/build.sh takes, how big the image is, how fast a
service in it answers its health check.

    .venv/bin/python bench/image_build.py [--cold]

Steps, each timed with one monotonic clock:

- `--cold` only: remove the Switchboard images and the locally built base image first, so the build makes
  the base image with mmdebstrap and installs every Python package again (pip's download cache inside
  podman's build cache is kept: a brand-new machine also downloads ~150 MB);
- build as it stands (after --cold: from nothing);
- build again with nothing changed (build.sh sees an image from the same inputs and stops);
- build after a one-line change in src/ (the dependency layers are reused; the change is undone after);
- `podman run` of the voice server on the host network until /health-check/live answers 200.

The machine is shared (2 cores, several engineers): read the figures as rough.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ["bash", str(ROOT / "deploy" / "image" / "build.sh")]
ENV = {**os.environ, "CONTAINERS_CONF": str(ROOT / "var" / "containers" / "containers.conf")}
TOUCHED = ROOT / "src" / "switchboard" / "__init__.py"


def _timed(command: list[str]) -> tuple[float, str]:
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=1800, check=True)
    return time.monotonic() - started, result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="remove the images first (the base image too)")
    args = parser.parse_args()
    if args.cold:
        listed = subprocess.run(["podman", "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True,
                                text=True, env=ENV, check=False).stdout.split()
        mine = [name for name in listed if name.startswith(("localhost/switchboard:", "localhost/debian-bookworm-python:"))]
        if mine:
            subprocess.run(["podman", "rmi", "--force", *mine], capture_output=True, env=ENV, check=False)
        subprocess.run(["podman", "image", "prune", "--force"], capture_output=True, env=ENV, check=False)
    seconds, image = _timed(BUILD)
    print(f"build {'from nothing' if args.cold else 'as it stands'}: {seconds:.1f} s -> {image}")
    seconds, _ = _timed(BUILD)
    print(f"build, nothing changed: {seconds:.1f} s")
    original = TOUCHED.read_text()
    try:
        TOUCHED.write_text(original + "# bench: a one-line change\n")
        seconds, _ = _timed(BUILD)
        print(f"build after a one-line change in src/: {seconds:.1f} s")
    finally:
        TOUCHED.write_text(original)
    seconds, _ = _timed(BUILD)  # back to the committed source
    size = subprocess.run(["podman", "image", "inspect", "--format", "{{.Size}}", image], capture_output=True,
                          text=True, env=ENV, check=True).stdout.strip()
    print(f"image size: {int(size) / 1e6:.0f} MB")
    port = _free_port()
    name = f"sb-bench-{port}"
    started = time.monotonic()
    subprocess.run(["podman", "run", "--detach", "--name", name, "--network", "host", "--env", "OPENAI_API_KEY=x",
                    "--env", "TWILIO_AUTH_TOKEN=bench",
                    image, "serve", "voice", "--host", "127.0.0.1", "--port", str(port)],
                   capture_output=True, env=ENV, check=True, timeout=60)
    try:
        while time.monotonic() - started < 60:
            with contextlib.suppress(OSError), urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/health-check/live", timeout=1) as answer:
                if answer.status == 200:
                    print(f"podman run -> voice server's /health-check/live 200: {time.monotonic() - started:.2f} s")
                    break
            time.sleep(0.05)
        else:
            print("the voice server never answered /health-check/live within 60 s")
            return 1
    finally:
        subprocess.run(["podman", "rm", "--force", "--time", "2", name], capture_output=True, env=ENV, check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
