"""Tests of the ImageFolder pipeline (reference ImageNet recipe) on a tiny generated folder."""
import pytest
import torch

pytest.importorskip("torchvision")
from PIL import Image  # noqa: E402  (Pillow comes with torchvision)

from translution.data.imagefolder import (  # noqa: E402
    IMAGENET_MEAN,
    IMAGENET_STD,
    MixUpCutMix,
    build_transforms,
    image_folder,
)

CLASSES = ["ant", "bee", "cat"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    g = torch.Generator().manual_seed(0)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir()
        for k in range(3):
            h, w = (40, 40) if k else (40, 52)  # one non-square image per class
            arr = torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8).numpy()
            Image.fromarray(arr).save(root / name / f"{k}.png")
    return root


def test_eval_pipeline(folder):
    ds = image_folder(folder, train=False, img_size=32, resize=36)
    assert ds.classes == CLASSES and len(ds) == 9
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 0
    x2, _ = ds[0]
    assert torch.equal(x, x2)  # deterministic
    # Matches a manual Resize(36) -> CenterCrop(32) -> normalise.
    img = Image.open(ds.samples[0][0]).convert("RGB")
    from torchvision.transforms import functional as F

    ref = F.normalize(F.to_tensor(F.center_crop(F.resize(img, 36), 32)), IMAGENET_MEAN,
                      IMAGENET_STD)
    torch.testing.assert_close(x, ref)


def test_train_pipeline(folder):
    torch.manual_seed(0)
    ds = image_folder(folder, train=True, img_size=32, resize=36)
    names = [type(t).__name__ for t in ds.transform.transforms]
    assert names == ["RandomResizedCrop", "RandomHorizontalFlip", "RandAugment", "ToTensor",
                     "Normalize"]
    ra = ds.transform.transforms[2]
    assert (ra.num_ops, ra.magnitude) == (2, 9)
    xs = [ds[i][0] for i in range(len(ds))]
    assert all(x.shape == (3, 32, 32) and x.dtype == torch.float32 for x in xs)
    assert not torch.equal(ds[1][0], ds[1][0])  # random augmentation
    loader = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=True,
                                         collate_fn=MixUpCutMix(3).collate)
    xb, tb = next(iter(loader))
    assert xb.shape == (4, 3, 32, 32) and tb.shape == (4, 3)
    torch.testing.assert_close(tb.sum(1), torch.ones(4))


def test_build_transforms_options():
    t = build_transforms(True, img_size=32, randaugment=None)
    assert "RandAugment" not in [type(s).__name__ for s in t.transforms]
    with pytest.raises(ValueError, match="resize=30, img_size=32"):
        build_transforms(False, img_size=32, resize=30)
    with pytest.raises(TypeError, match="img_size"):
        build_transforms(False, img_size=32.0)
    with pytest.raises(ValueError, match="randaugment"):
        build_transforms(True, img_size=32, randaugment=(2,))


def test_image_folder_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        image_folder(tmp_path / "nope", train=False)


@pytest.mark.parametrize("mixup, cutmix", [(0.8, 1.0), (0.8, 0.0), (0.0, 1.0)])
def test_mixup_cutmix_soft_targets(mixup, cutmix):
    torch.manual_seed(0)
    mix = MixUpCutMix(num_classes=5, mixup_alpha=mixup, cutmix_alpha=cutmix)
    images = torch.randn(8, 3, 16, 16)
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    for _ in range(5):
        out, targets = mix(images, labels)
        assert out.shape == images.shape and targets.shape == (8, 5)
        assert targets.dtype == torch.float32
        torch.testing.assert_close(targets.sum(1), torch.ones(8))
        assert bool((targets >= 0).all())
        # Mass sits on the own label and the label of the partner (the batch rolled by one).
        partner = labels.roll(1)
        own = targets.gather(1, labels[:, None])[:, 0]
        other = targets.gather(1, partner[:, None])[:, 0]
        same = labels == partner
        torch.testing.assert_close(torch.where(same, own, own + other), torch.ones(8))


def test_mixup_cutmix_uses_both():
    torch.manual_seed(0)
    mix = MixUpCutMix(num_classes=2)
    images = torch.stack([torch.zeros(3, 16, 16), torch.ones(3, 16, 16)])
    labels = torch.tensor([0, 1])
    kinds = set()
    for _ in range(30):
        out, _ = mix(images, labels)
        vals = out[0].unique()
        # CutMix pastes a box: only values 0 and 1; MixUp blends: one value strictly inside.
        kinds.add("cutmix" if set(vals.tolist()) <= {0.0, 1.0} else "mixup")
    assert kinds == {"cutmix", "mixup"}


def test_mixup_cutmix_disabled_and_validation():
    mix = MixUpCutMix(num_classes=3, mixup_alpha=0, cutmix_alpha=0)
    images = torch.randn(2, 3, 8, 8)
    out, t = mix(images, torch.tensor([2, 0]))
    assert torch.equal(out, images)
    assert torch.equal(t, torch.tensor([[0.0, 0, 1], [1, 0, 0]]))
    with pytest.raises(ValueError, match="labels must be in 0..2"):
        mix(images, torch.tensor([3, 0]))
    with pytest.raises(ValueError, match="2 images but 3 labels"):
        mix(images, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="mixup_alpha must be >= 0"):
        MixUpCutMix(3, mixup_alpha=-1)
    with pytest.raises(ValueError, match="num_classes"):
        MixUpCutMix(0)
