"""Task sources: synthetic task families and real few-shot datasets.

* :mod:`~metajax.data.sinusoid`: MAML's sinusoid regression tasks.
* :mod:`~metajax.data.gp`: 1-D Gaussian-process regression tasks (CNPs).
* :mod:`~metajax.data.omniglot`: Omniglot loaders (original zips/folders,
  npz arrays, TFDS) -> ``(classes, 20, H, W, 1)``.
* :mod:`~metajax.data.splits`: named Omniglot class splits (MAML, Vinyals,
  Lake).
* :mod:`~metajax.data.sampler`: on-device N-way K-shot episodic sampling
  into :class:`metajax.Task` batches, with rotation policies.
* :mod:`~metajax.data.imagenet`: mini-ImageNet, tieredImageNet, CIFAR-FS,
  FC100 loaders.
* :mod:`~metajax.data.images`: the image decoder all loaders share, the
  ink convention and both resize conventions (PIL filters, ``jax.image``).
* :mod:`~metajax.data.datadir`: data dir / cache dir settings and errors.
"""
from metajax.data import (datadir, gp, imagenet, images, omniglot, sampler,
                          sinusoid, splits)
from metajax.data.datadir import add_data_dir_flag, resolve_data_dir
from metajax.data.imagenet import (ImageClassData, load_cifar_fs, load_fc100,
                                   load_miniimagenet, load_tieredimagenet)
from metajax.data.omniglot import (OmniglotData, load_omniglot,
                                   load_omniglot_archive)
from metajax.data.sampler import ROTATIONS, EpisodeData, EpisodeSampler
from metajax.data.splits import SPLITS, OmniglotSplit, split_omniglot

__all__ = [
    "ROTATIONS", "SPLITS", "EpisodeData", "EpisodeSampler", "ImageClassData",
    "OmniglotData", "OmniglotSplit", "add_data_dir_flag", "datadir", "gp",
    "imagenet", "images", "load_cifar_fs", "load_fc100", "load_miniimagenet",
    "load_omniglot", "load_omniglot_archive", "load_tieredimagenet",
    "omniglot", "resolve_data_dir", "sampler", "sinusoid",
    "split_omniglot", "splits",
]
