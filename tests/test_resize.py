import numpy as np
import pytest
import torch
from PIL import Image

from streammask.model.preprocess import pil_resize_bilinear


@pytest.mark.parametrize("h,w", [(144, 176), (272, 640), (360, 640), (100, 400), (352, 352), (10, 700)])
def test_matches_pillow_bilinear_exactly(h, w):
    rng = np.random.default_rng(h * w)
    img = rng.integers(0, 256, (2, h, w, 3), dtype=np.uint8)
    ref = np.stack([np.asarray(Image.fromarray(i).resize((352, 352), Image.BILINEAR)) for i in img])
    out = pil_resize_bilinear(torch.from_numpy(img).permute(0, 3, 1, 2), (352, 352)).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(out, ref)


def test_rejects_float():
    with pytest.raises(TypeError, match="uint8"):
        pil_resize_bilinear(torch.zeros(1, 3, 4, 4), (2, 2))
