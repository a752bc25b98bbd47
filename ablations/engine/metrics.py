"""Generative metrics in three stages: images -> features -> statistics -> numbers (Sec. 4.2, Tables 1-5; issue #6).

The stages follow EDM's ``fid.py``: a feature network maps uint8 images to feature vectors; statistics (mean and
covariance) are accumulated in float64; the numbers (FID, IS, precision/recall) are computed from statistics or
features with torch-fidelity's own metric functions, so a number here is the number torch-fidelity would report.

Two feature worlds, and every output carries its ``world`` and ``feature_extractor`` label:

* ``"inception"`` (the paper's protocol): torch-fidelity's ``inception-v3-compat``, a port of the TensorFlow
  InceptionV3 graph used by ADM's evaluator; ``2048`` (pool3) features for FID and precision/recall,
  ``logits_unbiased`` for IS. Reference statistics come from the dataset (cached by :class:`ReferenceKey`) or from ADM's
  reference batch ``VIRTUAL_imagenet256_labeled.npz`` (:func:`load_adm_reference`), which makes numbers comparable
  with the paper's. Weights are never downloaded implicitly: pass ``inception_weights=PATH`` on offline clusters.
* ``"embedded"``: the harness's own classifier (``ablations/engine/classifier.py``) for the embedded dataset,
  registered with torch-fidelity as ``msf-embedded-cnn``; penultimate features for FID/PR, logits for IS. Never
  "Inception" numbers.

Images enter as uint8 ``[N, 3, H, W]`` (see :func:`ablations.engine.images.to_uint8`) and reach torch-fidelity as an
in-memory Dataset.
"""

from __future__ import annotations

import contextlib
import functools
import json
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torch_fidelity import FeatureExtractorBase, register_feature_extractor
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric
from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric
from torch_fidelity.metric_prc import calculate_precision_recall_part
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

from ablations.engine.classifier import EmbeddedClassifier, classifier_digest, load_classifier
from ablations.engine.io import atomic_open, file_sha256

World = Literal["inception", "embedded"]
INCEPTION_NAME = "inception-v3-compat"
INCEPTION_FILE = URL_INCEPTION_V3.rsplit("/", 1)[1]  # weights-inception-2015-12-05-6726825d.pth
EMBEDDED_NAME = "msf-embedded-cnn"
ADM_REFERENCE_URL = (
    "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/ref_batches/imagenet/256/"
    "VIRTUAL_imagenet256_labeled.npz"
)


class InceptionWeightsMissing(FileNotFoundError):
    """The InceptionV3 weights file is not available locally."""


# ----------------------------------------------------------------------------------------------------------------------
# Images: the class labels samples are generated for, and the Dataset torch-fidelity reads.


def class_labels_for(n: int, num_classes: int) -> Tensor:
    """The label of sample i is i % num_classes: evenly spread, deterministic (ADM/DiT draw them at random)."""
    if n < 0 or num_classes < 1:
        raise ValueError(f"need n >= 0 and num_classes >= 1, got {n=} {num_classes=}")
    return torch.arange(n) % num_classes  # [n] long


class UInt8Images(Dataset):
    """Uint8 images [N, 3, H, W] held in memory, the Dataset input torch-fidelity takes."""

    def __init__(self, images: Tensor):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 images [N, 3, H, W], got {images.dtype} {tuple(images.shape)}")
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Tensor:
        return self.images[i]  # [3, H, W] uint8


# ----------------------------------------------------------------------------------------------------------------------
# Features: the two worlds behind one torch-fidelity interface.


class EmbeddedFeatureExtractor(FeatureExtractorBase):
    """Torch-fidelity view of the embedded classifier: 'features' (penultimate) and 'logits' (last layer)."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, classifier=None, **kwargs):
        super().__init__(name, features_list)
        if classifier is None and feature_extractor_weights_path is None:
            raise ValueError("the embedded feature extractor needs classifier= or feature_extractor_weights_path=")
        self.classifier = classifier if classifier is not None else load_classifier(feature_extractor_weights_path)
        self.requires_grad_(False).eval()

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """torch-fidelity API: uint8 [B, 3, H, W] -> the requested layers, float32, in features_list order."""
        features, logits = self.classifier(x)  # [B, D], [B, K]
        named = {"features": features, "logits": logits}
        return tuple(named[k].float() for k in self.features_list)

    @staticmethod
    def get_provided_features_list():
        """torch-fidelity API: the layers this extractor can return."""
        return "features", "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        """torch-fidelity API: logits for IS, penultimate features for FID, KID and precision/recall."""
        return {"isc": "logits", "fid": "features", "kid": "features", "prc": "features"}[metric]

    @staticmethod
    def can_be_compiled():
        """torch-fidelity API: no torch.compile (metrics keep eager numerics)."""
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        """torch-fidelity API: an example input (unused, as compilation is off)."""
        return torch.zeros(1, 3, 32, 32, dtype=torch.uint8)


if EMBEDDED_NAME not in FEATURE_EXTRACTORS_REGISTRY:  # a module reload must not register twice
    register_feature_extractor(EMBEDDED_NAME, EmbeddedFeatureExtractor)


@dataclass(frozen=True)
class FeatureExtractor:
    """A torch-fidelity feature network plus the world and label recorded beside every number."""

    world: World
    label: str  # e.g. "inception-v3-compat" or "msf-embedded-cnn@<weights sha256[:12]>"
    module: FeatureExtractorBase
    feature_layer: str  # FID and precision/recall
    logits_layer: str  # IS


def inception_weights(path: str | Path | None = None, allow_download: bool = False) -> Path | None:
    """The local InceptionV3 weights file (given, or in torch's hub cache); None only to allow a download."""
    if path is not None:
        if not Path(path).is_file():
            raise InceptionWeightsMissing(f"Inception weights not found at inception_weights={path}")
        return Path(path)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE  # where torch-fidelity's download lands
    if cached.is_file():
        return cached
    if allow_download:
        return None
    raise InceptionWeightsMissing(
        f"Inception weights {INCEPTION_FILE} not found in {cached.parent}: download {URL_INCEPTION_V3} and pass "
        f"inception_weights=PATH (or place the file there, or allow_download=True where there is internet)"
    )


def inception_extractor(
    device: torch.device, weights: str | Path | None = None, allow_download: bool = False
) -> FeatureExtractor:
    """Torch-fidelity's InceptionV3 (the paper's ADM protocol) with pool3 features and unbiased logits.

    torch-fidelity unpickles its weights file with ``weights_only=False``, which would run code from a crafted file:
    the file is therefore loaded here with torch's ``weights_only`` unpickler (tensors only), re-saved by us into a
    private temporary file, and only that copy is handed to torch-fidelity. The label carries the weights' digest.
    """
    path = inception_weights(weights, allow_download)
    if path is None:  # a download by torch-fidelity, where there is internet and the caller allowed it
        module = create_feature_extractor(INCEPTION_NAME, ["2048", "logits_unbiased"], cuda=False, verbose=False)
        return FeatureExtractor("inception", INCEPTION_NAME, module.to(device), "2048", "logits_unbiased")
    state = torch.load(path, map_location="cpu", weights_only=True)  # refuses anything but tensors
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a state dict of tensors (InceptionV3 weights expected)")
    with tempfile.TemporaryDirectory(prefix="msf-inception-") as tmp:
        copy = Path(tmp) / "inception.pt"
        torch.save(dict(state), copy)  # our own file, written from tensors alone
        module = create_feature_extractor(INCEPTION_NAME, ["2048", "logits_unbiased"], cuda=False, verbose=False,
                                          feature_extractor_weights_path=str(copy))
    label = f"{INCEPTION_NAME}@{file_sha256(path)[:12]}"
    return FeatureExtractor("inception", label, module.to(device), "2048", "logits_unbiased")


def inception_layout() -> dict[str, tuple[int, ...]]:
    """The shape of every tensor of torch-fidelity's InceptionV3 state dict (what its weights file must hold), from the
    network built on the meta device: no weights are read or allocated."""
    return dict(_inception_layout())


@functools.cache
def _inception_layout() -> tuple[tuple[str, tuple[int, ...]], ...]:
    """:func:`inception_layout`, built once per process."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class Layout(FeatureExtractorInceptionV3):
        def load_state_dict(self, *args: Any, **kwargs: Any) -> None:
            """Nothing to load: only the names and shapes are wanted."""

    with tempfile.TemporaryDirectory(prefix="msf-inception-") as tmp:
        empty = Path(tmp) / "empty.pt"
        torch.save({}, empty)  # torch-fidelity unpickles the file it is given: an empty one we wrote
        with torch.device("meta"):
            net = Layout(INCEPTION_NAME, ["2048"], feature_extractor_weights_path=str(empty))
    return tuple((k, tuple(v.shape)) for k, v in net.state_dict().items())


def embedded_extractor(classifier: EmbeddedClassifier | str | Path, device: torch.device) -> FeatureExtractor:
    """The embedded classifier (a model or its safetensors file) as a torch-fidelity feature extractor."""
    model = classifier if isinstance(classifier, EmbeddedClassifier) else load_classifier(classifier)
    module = create_feature_extractor(
        EMBEDDED_NAME, ["features", "logits"], cuda=False, verbose=False, classifier=model
    )
    label = f"{EMBEDDED_NAME}@{classifier_digest(model)}"
    return FeatureExtractor("embedded", label, module.to(device), "features", "logits")


@dataclass(frozen=True)
class Features:
    """Per-image features [N, D] and logits [N, K], float32 on CPU."""

    features: Tensor
    logits: Tensor


@contextlib.contextmanager
def ieee_fp32() -> Iterator[None]:
    """No TF32 in convolutions or matmuls inside the block (metrics keep full float32), then restore."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def extract_features(images: Tensor, extractor: FeatureExtractor, batch_size: int, device: torch.device) -> Features:
    """Uint8 images [N, 3, H, W] -> features and logits, through torch-fidelity's own extraction loop.

    Args:
        images: uint8 images on CPU.
        extractor: the feature network (its module must already be on ``device``).
        batch_size: images per forward pass; results do not depend on it beyond float32 round-off.
        device: where the network runs; torch-fidelity is told ``cuda=device.type == "cuda"`` explicitly.
            Runs in IEEE float32 (TF32 off, see :func:`ieee_fp32`).
    """
    cuda = device.type == "cuda"
    with ieee_fp32(), torch.cuda.device(device) if cuda else contextlib.nullcontext():  # torch-fidelity: .cuda()
        out = get_featuresdict_from_dataset(
            UInt8Images(images), extractor.module, batch_size, cuda, save_cpu_ram=True, verbose=False
        )  # save_cpu_ram: no DataLoader worker processes
    return Features(out[extractor.feature_layer].float(), out[extractor.logits_layer].float())


# ----------------------------------------------------------------------------------------------------------------------
# Statistics: float64 mean and covariance, cached per reference set.


def feature_stats(features: Tensor, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """FID's Gaussian fit (Heusel et al. 2017): mean [D] and unbiased covariance [D, D], accumulated in float64."""
    n, d = features.shape
    if n < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {n}")
    s = torch.zeros(d, dtype=torch.float64)
    ss = torch.zeros(d, d, dtype=torch.float64)
    for x in features.split(chunk):
        x = x.to("cpu", torch.float64)  # [b, D]
        s += x.sum(0)
        ss += x.T @ x  # [D, D]
    mu = s / n  # [D]
    sigma = (ss - n * torch.outer(mu, mu)) / (n - 1)  # [D, D], as np.cov (ddof=1)
    return mu.numpy(), sigma.numpy()


@dataclass(frozen=True)
class ReferenceKey:
    """What a reference set's statistics depend on; the cache file is named after it."""

    dataset: str
    split: str
    extractor: str  # FeatureExtractor.label
    n: int  # number of reference images

    def filename(self) -> str:
        """A readable, filesystem-safe file name for this key."""
        raw = f"{self.dataset}-{self.split}-{self.extractor}-n{self.n}"
        return "".join(c if c.isalnum() or c in "-_.@" else "_" for c in raw) + ".npz"


@dataclass(frozen=True)
class ReferenceStats:
    """Reference mean/covariance for FID and, where available, reference features for precision/recall."""

    key: ReferenceKey
    mu: np.ndarray  # [D] float64
    sigma: np.ndarray  # [D, D] float64
    features: Tensor | None  # [n, D] float32, None when only statistics are known

    @classmethod
    def from_features(cls, key: ReferenceKey, features: Tensor) -> ReferenceStats:
        """Statistics of reference features [n, D]."""
        if len(features) != key.n:
            raise ValueError(f"reference key says n={key.n} but {len(features)} feature vectors were given")
        mu, sigma = feature_stats(features)
        return cls(key, mu, sigma, features.float().cpu())

    def save(self, root: str | Path) -> Path:
        """Write mu, sigma, features and the JSON key to ``root/<key>.npz`` atomically."""
        path = Path(root) / self.key.filename()
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {
            "mu": self.mu,
            "sigma": self.sigma,
            "key": np.array(json.dumps(asdict(self.key), sort_keys=True)),
        }
        if self.features is not None:
            arrays["features"] = self.features.numpy()
        with atomic_open(path) as f:
            np.savez(f, **arrays)
        return path

    @classmethod
    def load(cls, root: str | Path, key: ReferenceKey) -> ReferenceStats | None:
        """The cached statistics for ``key``, or None when absent; a file with another key is an error."""
        path = Path(root) / key.filename()
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as z:
            stored = ReferenceKey(**json.loads(str(z["key"])))
            if stored != key:
                raise ValueError(f"{path} holds statistics for {stored}, not {key}")
            features = torch.from_numpy(z["features"]) if "features" in z.files else None
            return cls(key, z["mu"], z["sigma"], features)


def cached_reference(root: str | Path, key: ReferenceKey, compute_features: Callable[[], Tensor]) -> ReferenceStats:
    """Reference statistics for ``key`` from the cache under ``root``, computed and saved once on a miss."""
    cached = ReferenceStats.load(root, key)
    if cached is not None:
        return cached
    stats = ReferenceStats.from_features(key, compute_features())
    stats.save(root)
    return stats


def load_adm_reference(
    npz_path: str | Path, extractor: FeatureExtractor, batch_size: int, device: torch.device
) -> ReferenceStats:
    """ADM's reference batch (the paper's evaluation, Sec. 4.2): its Inception mu/sigma, and its images' features.

    ``VIRTUAL_imagenet256_labeled.npz`` holds 'mu'/'sigma' (pool3 statistics of the ImageNet training set, from ADM's
    TensorFlow Inception) and 'arr_0' (10,000 uint8 NHWC images, used for precision/recall as ADM's evaluator does).
    """
    path = Path(npz_path)
    if not path.is_file():
        raise FileNotFoundError(f"ADM reference batch not found: {path}; download it from {ADM_REFERENCE_URL}")
    with np.load(path, allow_pickle=False) as z:
        missing = {"mu", "sigma", "arr_0"} - set(z.files)
        if missing:
            raise ValueError(f"{path} is not an ADM reference batch: missing {sorted(missing)}")
        mu, sigma, images = z["mu"].astype(np.float64), z["sigma"].astype(np.float64), z["arr_0"]
    if extractor.world != "inception":
        raise ValueError(f"ADM's statistics are Inception pool3 statistics; got the {extractor.world!r} extractor")
    features = extract_features(torch.from_numpy(images).permute(0, 3, 1, 2), extractor, batch_size, device).features
    key = ReferenceKey("adm", path.stem, extractor.label, len(images))
    return ReferenceStats(key, mu, sigma, features)


# ----------------------------------------------------------------------------------------------------------------------
# Numbers.


def fid_from_stats(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) (Heusel et al. 2017), via torch-fidelity.

    torch-fidelity takes tr (S1 S2)^(1/2) as the sum of square roots of the eigenvalues of S1 S2 (real parts), which
    equals the trace of scipy.linalg.sqrtm(S1 S2) used by ADM's evaluator; tests compare the two.
    """
    stats1 = {"mu": np.asarray(mu1, np.float64), "sigma": np.asarray(sigma1, np.float64)}
    stats2 = {"mu": np.asarray(mu2, np.float64), "sigma": np.asarray(sigma2, np.float64)}
    return float(fid_statistics_to_metric(stats1, stats2, verbose=False)[KEY_METRIC_FID])


def inception_score(logits: Tensor, splits: int = 10, shuffle_seed: int | None = 2020) -> tuple[float, float]:
    """Inception Score exp E_x KL(p(y|x) || p(y)) (Salimans et al. 2016): mean and std over splits, as torch-fidelity.

    ``shuffle_seed`` is torch-fidelity's default shuffle of the samples before splitting (None: no shuffle).
    """
    if len(logits) < splits:
        raise ValueError(f"inception score needs at least {splits} samples (one per split), got {len(logits)}")
    shuffle, seed = shuffle_seed is not None, shuffle_seed or 0
    out = isc_features_to_metric(logits.cpu(), splits, shuffle=shuffle, rng_seed=seed)
    return out[KEY_METRIC_ISC_MEAN], out[KEY_METRIC_ISC_STD]


def precision_recall(real: Tensor, fake: Tensor, k: int = 3, batch_size: int = 10000) -> tuple[float, float]:
    """Improved precision/recall (Kynkäänniemi et al. 2019) with k-NN balls, as torch-fidelity computes it.

    Precision: fraction of fake [Nf, D] inside some real sample's k-NN ball; recall: real [Nr, D] inside a fake ball.
    """
    if len(real) <= k or len(fake) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than k real and fake samples")
    return calculate_precision_recall_part(fake.float(), real.float(), k, batch_size)


def metrics_from_features(
    fake: Features,
    reference: ReferenceStats,
    extractor: FeatureExtractor,
    isc_splits: int = 10,
    prc_k: int = 3,
    device: torch.device | None = None,
) -> dict:
    """FID, IS, precision and recall of fake features against a reference, labelled with their world.

    Args:
        fake: features and logits of the generated images.
        reference: statistics (and features, for precision/recall) of the reference set, from the same extractor.
        extractor: the feature network both came from; its label and world go into the result.
        isc_splits: IS splits (torch-fidelity and ADM use 10).
        prc_k: nearest-neighbour k of precision/recall (ADM and torch-fidelity use 3).
        device: where the precision/recall distances are computed (default CPU).
    Returns:
        {"fid", "is_mean", "is_std", "precision", "recall", "n_fake", "n_ref", "feature_extractor", "world",
        "reference"}; precision/recall are None when the reference has statistics only.
    """
    if reference.key.extractor != extractor.label:
        raise ValueError(f"reference features come from {reference.key.extractor}, fake ones from {extractor.label}")
    mu, sigma = feature_stats(fake.features)
    is_mean, is_std = inception_score(fake.logits, isc_splits)
    precision = recall = None
    if reference.features is not None:
        device = device or torch.device("cpu")
        precision, recall = precision_recall(reference.features.to(device), fake.features.to(device), prc_k)
    return {
        "fid": fid_from_stats(mu, sigma, reference.mu, reference.sigma),
        "is_mean": is_mean,
        "is_std": is_std,
        "precision": precision,
        "recall": recall,
        "n_fake": len(fake.features),
        "n_ref": reference.key.n,
        "feature_extractor": extractor.label,
        "world": extractor.world,
        "reference": f"{reference.key.dataset}/{reference.key.split}",
    }


def compute_metrics(
    fake: Tensor,
    reference: ReferenceStats,
    extractor: FeatureExtractor,
    batch_size: int,
    device: torch.device,
    isc_splits: int = 10,
    prc_k: int = 3,
) -> dict:
    """Uint8 fake images [N, 3, H, W] -> the labelled metrics dict of :func:`metrics_from_features`."""
    features = extract_features(fake, extractor, batch_size, device)
    return metrics_from_features(features, reference, extractor, isc_splits, prc_k, device)


# ----------------------------------------------------------------------------------------------------------------------
# Error bars (the paper reports none).


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1) of a metric over independent seeds."""
    if len(values) < 2:
        raise ValueError(f"a standard deviation needs at least 2 values, got {len(values)}")
    v = np.asarray(values, np.float64)
    return float(v.mean()), float(v.std(ddof=1))


def bootstrap_fid(
    fake_features: Tensor, reference: ReferenceStats, n_boot: int, generator: torch.Generator, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of FID over resampled fake features [N, D], the reference held fixed.

    Resampling with replacement repeats samples, which inflates FID a little, so the interval describes the spread of
    FID due to the finite fake sample; it is not centred on the point estimate.
    """
    n = len(fake_features)
    fids = []
    for _ in range(n_boot):
        idx = torch.randint(n, (n,), generator=generator)  # [N] resample with replacement
        mu, sigma = feature_stats(fake_features[idx])
        fids.append(fid_from_stats(mu, sigma, reference.mu, reference.sigma))
    lo, hi = np.quantile(fids, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


# ----------------------------------------------------------------------------------------------------------------------
# ADM-compatible sample export (for ADM's TensorFlow evaluator.py).


def save_adm_npz(path: str | Path, images: np.ndarray, labels: np.ndarray | None = None) -> Path:
    """ADM's sample batch format: uint8 NHWC images [N, H, W, 3] under 'arr_0' and, for class-conditional samples,
    their int64 labels [N] under 'arr_1' (ADM's image_sample.py), written atomically."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 NHWC images [N, H, W, 3], got {images.dtype} {images.shape}")
    arrays = {"arr_0": images}
    if labels is not None:
        if labels.shape != images.shape[:1]:
            raise ValueError(f"expected one label per image, got {labels.shape} for {images.shape[0]} images")
        arrays["arr_1"] = labels.astype(np.int64)
    with atomic_open(path) as f:
        np.savez(f, *arrays.values())  # positional: arr_0, arr_1
    return Path(path)


def load_adm_npz(path: str | Path) -> np.ndarray:
    """ADM evaluator's sample batch format: the uint8 NHWC images [N, H, W, 3] under key 'arr_0'."""
    with np.load(path, allow_pickle=False) as z:
        if "arr_0" not in z.files:
            raise ValueError(f"{path} has no 'arr_0' array; not an ADM sample batch")
        return z["arr_0"]
