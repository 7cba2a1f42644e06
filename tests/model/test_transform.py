"""Pasting masks into the image: the binary path equals torchvision's."""

import pytest
import torch
import torchvision


@pytest.mark.parametrize("threshold", [0.3, 0.5])
def test_binary_pasting_gives_torchvisions_pixels(threshold):
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    from napari_amodal.model.transform import paste_binary_masks

    g = torch.Generator().manual_seed(0)
    n, h, w = 40, 70, 90
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w + 10.0, h + 10.0]) - 10
    wh = torch.rand(n, 2, generator=g) * 40 + 0.2  # down to sub-pixel boxes
    # clipped to the image, as detections are: many touch an edge, and their grown box leaves it
    boxes = torchvision.ops.clip_boxes_to_image(torch.cat([xy, xy + wh], 1), (h, w))
    boxes = boxes[(boxes[:, 2:] - boxes[:, :2]).min(1).values > 0.1]
    n = len(boxes)
    masks = torch.rand(n, 1, 16, 16, generator=g)
    want = paste_masks_in_image(masks, boxes, (h, w))[:, 0] >= threshold
    got = paste_binary_masks(masks, boxes, (h, w), threshold)
    assert got.dtype == torch.bool and got.shape == (n, h, w)
    assert torch.equal(got, want) and want.any(-1).any(-1).sum() > n // 2
    assert paste_binary_masks(masks[:0], boxes[:0], (h, w), threshold).shape == (0, h, w)
    outside = torch.tensor([[200.0, 200.0, 230.0, 240.0]])  # torchvision's pasting fails on this one
    assert not paste_binary_masks(masks[:1], outside, (h, w), threshold).any()
