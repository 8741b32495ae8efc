"""Batched augmentation on the data's own device, the normalisation, the `DeviceLoader`, and a per-sample reference.

The authors' CIFAR/SVHN augmentation (official_code.md §5; get_augmented_data.py:38-104) is a zero
pad to 40x40, a random 32x32 crop and, for CIFAR only, a random horizontal flip. Here it runs on a
whole batch at once: pad the batch once, then one `torch.gather` reads every image's crop (and
flip) through per-image indices. No Python loop over images, no PIL, no worker processes
(after airbench's `CifarLoader`, style.md §2), and the same code on CPU and GPU.
Measured on a 2-core Xeon, torch 2.14, B=128, 3x32x32, pad 4, flip: 0.33 ms for crop+flip (0.64 ms
with `normalize`), against 6.3 ms (15 ms) for torchvision's transforms image by image
(`reference_transform`); a DeviceLoader batch costs 1.5 ms against 18 ms from a DataLoader over
`ReferenceDataset` (1 thread, no workers).

`reference_transform` and `ReferenceDataset` are that per-sample torchvision path: tests check the
batched version against it, and `bench.py` times a plain `DataLoader` loop with it.
"""

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

if TYPE_CHECKING:  # torchvision is imported only by the per-sample reference path: ~1.5 s saved per job
    from torchvision.transforms import Compose


def _draw(n: int, crop_pad: int, flip: bool, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Crop offsets in [0, 2*crop_pad] and flip decisions for n images, drawn on the generator's device."""
    device = generator.device
    offsets = torch.randint(0, 2 * crop_pad + 1, (2, n), generator=generator, device=device)  # (2, n)
    if flip:
        flips = torch.randint(0, 2, (n,), generator=generator, device=device, dtype=torch.bool)  # (n,)
    else:
        flips = torch.zeros(n, dtype=torch.bool, device=device)
    return offsets[0], offsets[1], flips


def _crop_flip(x: Tensor, dy: Tensor, dx: Tensor, flips: Tensor, crop_pad: int) -> Tensor:
    """Image i of x zero-padded by crop_pad, cropped back to H x W at row dy[i], column dx[i], mirrored if flips[i].

    Flipping after the crop is the same as reading the crop's columns backwards, so both happen in
    one gather over the flattened padded image.
    """
    B, C, H, W = x.shape
    Wp = W + 2 * crop_pad
    xp = F.pad(x, (crop_pad,) * 4)  # (B, C, H+2p, W+2p)
    rows = dy[:, None] + torch.arange(H, device=x.device)  # (B, H)
    cols = torch.arange(W, device=x.device).expand(B, W)  # (B, W)
    cols = dx[:, None] + torch.where(flips[:, None], W - 1 - cols, cols)  # (B, W)
    index = (rows[:, :, None] * Wp + cols[:, None, :]).view(B, 1, H * W).expand(B, C, H * W)  # (B, C, H*W)
    return xp.flatten(2).gather(2, index).view(B, C, H, W)


def augment(x: Tensor, crop_pad: int, flip: bool, generator: torch.Generator) -> Tensor:
    """Random crop after zero padding by crop_pad, and a horizontal flip with p=0.5 if flip, per image.

    x: uint8 (B, C, H, W) on any device; the random numbers come from `generator` on its own device
    (then move to x's), so a CPU generator gives the same augmentation on CPU and GPU.
    Returns uint8 (B, C, H, W); x itself when there is nothing to do.
    """
    if crop_pad < 0:
        raise ValueError(f"crop_pad must be >= 0, got {crop_pad}")
    if crop_pad == 0 and not flip:
        return x
    dy, dx, flips = (t.to(x.device, non_blocking=True) for t in _draw(len(x), crop_pad, flip, generator))
    return _crop_flip(x, dy, dx, flips, crop_pad)


def normalize(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """(x/255 - mean)/std per channel: uint8 (B, C, H, W) -> float32 (B, C, H, W), as one fused multiply-add."""
    shift, scale = _affine(mean.to(x.device), std.to(x.device))
    return torch.addcmul(shift, x.to(torch.float32), scale)


def _affine(mean: Tensor, std: Tensor) -> tuple[Tensor, Tensor]:
    """(shift, scale), each (C, 1, 1) float32, with (x/255 - mean)/std = shift + x * scale."""
    mean = mean.to(torch.float32)[:, None, None]
    std = std.to(torch.float32)[:, None, None]
    return -mean / std, 1 / (255 * std)


class DeviceLoader:
    """Batches of (normalised float32 images, int64 labels) from one split kept on `device` as one uint8 tensor.

    Each epoch draws, from the loader's own CPU generator, one permutation (if shuffle) and every
    image's crop offset and flip, and moves them to `device` in one copy. The batches are thus the
    same on CPU and GPU, and `state_dict()` taken between epochs (as a checkpoint is) makes the
    next epoch after `load_state_dict()` exactly the one the uninterrupted run would have seen.
    mean/std None means no standardisation: images come out as x/255.

    Speed: a batch costs two kernels (a uint8->float32 cast and one multiply-add), because the
    gather of the shuffled images and their crop/flip run once per chunk of `chunk_images` images
    (whole batches), not once per batch: on a GPU every launch saved counts at CIFAR scale.
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int,
        device: str | torch.device,
        shuffle: bool = False,
        crop_pad: int = 0,
        flip: bool = False,
        mean: Tensor | None = None,
        std: Tensor | None = None,
        seed: int = 0,
        drop_last: bool = False,
        chunk_images: int = 16384,
    ) -> None:
        if x.dtype != torch.uint8 or x.dim() != 4:
            raise ValueError(f"x must be uint8 (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} images but y has {len(y)} labels")
        if batch_size < 1 or crop_pad < 0:
            raise ValueError(f"need batch_size >= 1 and crop_pad >= 0, got {batch_size} and {crop_pad}")
        self.device = torch.device(device)
        self.x = x.to(self.device)  # (N, C, H, W) uint8, moved once
        self.y = y.to(self.device, torch.int64)  # (N,)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.crop_pad, self.flip = crop_pad, flip
        channels = x.shape[1]
        self.mean = (torch.zeros(channels) if mean is None else mean).to(self.device, torch.float32)
        self.std = (torch.ones(channels) if std is None else std).to(self.device, torch.float32)
        self._shift, self._scale = _affine(self.mean, self.std)
        self.chunk_batches = max(1, chunk_images // batch_size)
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n = len(self.x)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)  # (N,)
        augmenting = self.crop_pad > 0 or self.flip
        if augmenting:
            dy, dx, flips = _draw(n, self.crop_pad, self.flip, self.generator)
            dy, dx, flips = (t.to(self.device) for t in (dy, dx, flips))
        order = order.to(self.device)
        bs, batches = self.batch_size, len(self)
        for first in range(0, batches, self.chunk_batches):
            part = slice(first * bs, min(first + self.chunk_batches, batches) * bs)  # whole batches
            index = order[part]  # (M,)
            xc = self.x[index]  # (M, C, H, W) uint8
            if augmenting:
                xc = _crop_flip(xc, dy[part], dx[part], flips[part], self.crop_pad)
            yc = self.y[index]  # (M,)
            for b in range(0, len(index), bs):
                yield torch.addcmul(self._shift, xc[b : b + bs].to(torch.float32), self._scale), yc[b : b + bs]

    def state_dict(self) -> dict[str, Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.generator.set_state(state["generator"])


class _PadRandomCrop(torch.nn.Module):
    """torchvision's RandomCrop(size=the input's own size, padding=crop_pad), for any input size."""

    def __init__(self, crop_pad: int) -> None:
        super().__init__()
        self.crop_pad = crop_pad

    def forward(self, img: Tensor) -> Tensor:
        from torchvision import transforms as T

        return T.RandomCrop(tuple(img.shape[-2:]), padding=self.crop_pad)(img)


def reference_transform(crop_pad: int, flip: bool, mean: Tensor, std: Tensor) -> "Compose":
    """The same augmentation and normalisation per image with torchvision's transforms (CHW uint8 -> float32).

    Random numbers come from torch's global generator, as in any torchvision pipeline.
    """
    from torchvision import transforms as T

    steps: list[torch.nn.Module] = []
    if crop_pad > 0:
        steps.append(_PadRandomCrop(crop_pad))
    if flip:
        steps.append(T.RandomHorizontalFlip())
    steps += [T.ConvertImageDtype(torch.float32), T.Normalize(mean.tolist(), std.tolist())]
    return T.Compose(steps)


class ReferenceDataset(Dataset):
    """A split as a map-style Dataset of (transform(image), label): the plain per-sample path for a DataLoader."""

    def __init__(self, x: Tensor, y: Tensor, transform: "Compose") -> None:
        self.x, self.y, self.transform = x, y, transform  # x: (N, C, H, W) uint8, y: (N,) int64

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.transform(self.x[i]), self.y[i]
