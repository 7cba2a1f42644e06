"""A tiny model config for fast CPU tests of training and inference plumbing."""

from napari_amodal.model import get_config


def tiny_config(head: str = "vq_refine", occlusion: bool = True):
    return get_config("lean").replace(
        name="tiny", mask_head=head, occlusion=occlusion, min_size=128, max_size=128,
        fpn_channels=32, head_channels=32, occlusion_channels=16, box_representation_size=64,
        rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=50, rpn_pre_nms_top_n_test=100,
        rpn_post_nms_top_n_test=30, box_batch_size_per_image=32, rpn_batch_size_per_image=32,
        box_detections_per_img=16, mask_size=16,
    )


def save_untrained(path, config=None):
    """An untrained detector checkpoint (random weights) at ``path``."""
    from napari_amodal.model import build_model
    from napari_amodal.checkpoint import save_checkpoint

    config = config or tiny_config()
    model = build_model(config)
    return save_checkpoint(path, model.state_dict(), {"kind": "detector", "model": config.to_dict()}, {})
