"""The package's public names are pinned."""

from __future__ import annotations

import census_segmentation


def test_public_api_is_sorted_and_importable() -> None:
    names = census_segmentation.__all__

    assert names == sorted(names, key=lambda name: (not name.isupper(), name))
    assert all(hasattr(census_segmentation, name) for name in names)
