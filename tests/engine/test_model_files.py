"""Model files are verified by SHA-256 before loading; a mismatch names the file."""

from __future__ import annotations

import pytest

from switchboard.engine import model_files
from switchboard.engine.model_files import ModelFile, ModelFileError


def test_the_installed_model_files_match_their_recorded_digests() -> None:
    assert (model_files.verify(model_files.WHISPER_FILES) / "model" / "model.bin").is_file()
    assert (model_files.verify(model_files.HIBARI_FILES) / "assets" / "hibari.onnx").is_file()


def test_a_changed_file_is_refused_by_name() -> None:
    wrong = (ModelFile("hibari", "assets/vocab.json", "0" * 64),)
    with pytest.raises(ModelFileError, match=r"hibari/assets/vocab\.json has sha256 70abefbe"):
        model_files.verify(wrong)


def test_a_missing_package_or_file_is_named() -> None:
    with pytest.raises(ModelFileError, match="'no_such_model_package' is not installed"):
        model_files.verify((ModelFile("no_such_model_package", "model.bin", "0" * 64),))
    with pytest.raises(ModelFileError, match="assets/gone.onnx is missing"):
        model_files.verify((ModelFile("hibari", "assets/gone.onnx", "0" * 64),))
