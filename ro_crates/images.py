"""Container image references, split the way the workflow-run ``ContainerImage`` type wants."""

from __future__ import annotations

__all__ = ["ImageRef", "parse_image"]

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class ImageRef:
    """A container image reference split the way the ``ContainerImage`` type wants it."""

    registry: str
    name: str
    tag: str | None = None
    sha256: str | None = None

    @property
    def reference(self) -> str:
        """``registry/name[:tag][@sha256:…]``."""
        ref = f"{self.registry}/{self.name}"
        if self.tag:
            ref += f":{self.tag}"
        if self.sha256:
            ref += f"@sha256:{self.sha256}"
        return ref


def _digest_hex(digest: str | None) -> str | None:
    if not digest:
        return None
    _, sep, hexpart = digest.rpartition("sha256:")
    hexpart = hexpart if sep else digest
    return hexpart.lower() if re.fullmatch(r"[0-9a-fA-F]{64}", hexpart) else None


def parse_image(reference: str, digest: str | None = None) -> ImageRef:
    """Split ``[registry/]name[:tag][@sha256:…]`` (Docker's rules; ``docker.io`` by default).

    Args:
        reference: the image as written in the spec.
        digest: a digest reported for the running image (``sha256:…`` or an image id such as
            ``docker.io/library/python@sha256:…``); wins over one written in ``reference``.
    """
    rest, _, pinned = reference.strip().partition("@")
    slash, colon = rest.rfind("/"), rest.rfind(":")
    name, tag = (rest[:colon], rest[colon + 1 :]) if colon > slash else (rest, None)
    head, sep, tail = name.partition("/")
    if sep and ("." in head or ":" in head or head == "localhost"):
        registry, name = head, tail
    else:
        registry = "docker.io"
        if "/" not in name:
            name = f"library/{name}"
    sha = _digest_hex(digest) or _digest_hex(pinned)
    if not tag and not sha:
        tag = "latest"
    return ImageRef(registry, name, tag, sha)
