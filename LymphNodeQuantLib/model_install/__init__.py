"""Installing trained models: published nnU-Net models, zips, URLs and folders (``lnq models install``).

:func:`~.installer.install_model` puts a model into the per-user models folder
(:func:`~.installer.user_models_dir`), where ``lnq segment --model NAME`` and the Slicer module find
it; :func:`~.installer.remove_model` takes it out again. Known published models and their checksums
live in :mod:`.registry`; downloads resume and are checked (:mod:`.download`); zips are unpacked
safely (:mod:`.unpack`).
"""

from .installer import LicenceNotAccepted, install_model, remove_model, user_models_dir
from .registry import PublishedModel, find_published, published_models

__all__ = [
    "LicenceNotAccepted",
    "PublishedModel",
    "find_published",
    "install_model",
    "published_models",
    "remove_model",
    "user_models_dir",
]
