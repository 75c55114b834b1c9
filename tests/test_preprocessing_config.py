"""The preset's preprocessing section: bundled presets set it, typos are named by key path."""

from __future__ import annotations

import pytest

from stsfl.common.config import ConfigError, ModelPreset, load_config, load_preset


def test_bundled_presets_fix_the_preprocessing():
    paper, small = load_preset("paper"), load_preset("cpu-small")
    assert paper.preprocessing.wsi.mpp == 0.5 and paper.preprocessing.wsi.stain_normalisation == "reinhard"
    assert small.preprocessing.wsi.tile_size < paper.preprocessing.wsi.tile_size
    assert paper.preprocessing.mri.n4.enabled and paper.preprocessing.mri.margin_mm > 0


def test_preprocessing_typo_is_named_with_its_key_path(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("name: p\npreprocessing:\n  wsi:\n    encoder: {arch: resnet10, sed: 1}\n")
    with pytest.raises(ConfigError, match=r"preprocessing\.wsi\.encoder\.sed: unknown key"):
        load_config(path, ModelPreset)
    path.write_text("name: p\npreprocessing:\n  mri:\n    interpolation: cubic\n")
    with pytest.raises(ConfigError, match=r"preprocessing\.mri\.interpolation: expected 'linear' or 'bspline'"):
        load_config(path, ModelPreset)
