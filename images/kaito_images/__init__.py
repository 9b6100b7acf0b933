"""The project's container images, built on this machine without Docker (see images/README.md)."""

from __future__ import annotations

from .specs import IMAGES, ImageName, build_all, image_spec

__all__ = ["IMAGES", "ImageName", "build_all", "image_spec"]
