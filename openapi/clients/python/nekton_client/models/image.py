from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.image_kind_view import ImageKindView
from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.image_layer import ImageLayer


T = TypeVar("T", bound="Image")


@_attrs_define
class Image:
    """An image in a worker host's store.

    Attributes:
        cmd (list[str]):
        config_digest (str):
        entrypoint (list[str]): The image's default program (containers): entrypoint, cmd, working dir and user.
        kind (ImageKindView): What an image is: a Linux container image or a Wasm artifact.
        layers (list[ImageLayer]):
        manifest_digest (str): The platform-specific manifest the image was stored from.
        platform (None | str): `os/architecture[/variant]`, when known.
        reference (str): The normalised reference (`docker.io/library/busybox:latest`).
        size_bytes (int): Bytes of all blobs (config and layers) as stored.
        stored_at (datetime.datetime): When this host stored the image.
        unpacked_size_bytes (int): Bytes of all extracted files (0 for Wasm images).
        index_digest (None | str | Unset): The multi-arch index the manifest was chosen from, if the reference named
            one.
        user (None | str | Unset):
        working_dir (None | str | Unset):
    """

    cmd: list[str]
    config_digest: str
    entrypoint: list[str]
    kind: ImageKindView
    layers: list[ImageLayer]
    manifest_digest: str
    platform: None | str
    reference: str
    size_bytes: int
    stored_at: datetime.datetime
    unpacked_size_bytes: int
    index_digest: None | str | Unset = UNSET
    user: None | str | Unset = UNSET
    working_dir: None | str | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        cmd = self.cmd

        config_digest = self.config_digest

        entrypoint = self.entrypoint

        kind = self.kind.value

        layers = []
        for layers_item_data in self.layers:
            layers_item = layers_item_data.to_dict()
            layers.append(layers_item)

        manifest_digest = self.manifest_digest

        platform: None | str
        platform = self.platform

        reference = self.reference

        size_bytes = self.size_bytes

        stored_at = self.stored_at.isoformat()

        unpacked_size_bytes = self.unpacked_size_bytes

        index_digest: None | str | Unset
        if isinstance(self.index_digest, Unset):
            index_digest = UNSET
        else:
            index_digest = self.index_digest

        user: None | str | Unset
        if isinstance(self.user, Unset):
            user = UNSET
        else:
            user = self.user

        working_dir: None | str | Unset
        if isinstance(self.working_dir, Unset):
            working_dir = UNSET
        else:
            working_dir = self.working_dir

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "cmd": cmd,
                "config_digest": config_digest,
                "entrypoint": entrypoint,
                "kind": kind,
                "layers": layers,
                "manifest_digest": manifest_digest,
                "platform": platform,
                "reference": reference,
                "size_bytes": size_bytes,
                "stored_at": stored_at,
                "unpacked_size_bytes": unpacked_size_bytes,
            }
        )
        if index_digest is not UNSET:
            field_dict["index_digest"] = index_digest
        if user is not UNSET:
            field_dict["user"] = user
        if working_dir is not UNSET:
            field_dict["working_dir"] = working_dir

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.image_layer import ImageLayer

        d = dict(src_dict)
        cmd = cast(list[str], d.pop("cmd"))

        config_digest = d.pop("config_digest")

        entrypoint = cast(list[str], d.pop("entrypoint"))

        kind = ImageKindView(d.pop("kind"))

        layers = []
        _layers = d.pop("layers")
        for layers_item_data in _layers:
            layers_item = ImageLayer.from_dict(layers_item_data)

            layers.append(layers_item)

        manifest_digest = d.pop("manifest_digest")

        def _parse_platform(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        platform = _parse_platform(d.pop("platform"))

        reference = d.pop("reference")

        size_bytes = d.pop("size_bytes")

        stored_at = datetime.datetime.fromisoformat(d.pop("stored_at"))

        unpacked_size_bytes = d.pop("unpacked_size_bytes")

        def _parse_index_digest(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        index_digest = _parse_index_digest(d.pop("index_digest", UNSET))

        def _parse_user(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        user = _parse_user(d.pop("user", UNSET))

        def _parse_working_dir(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        working_dir = _parse_working_dir(d.pop("working_dir", UNSET))

        image = cls(
            cmd=cmd,
            config_digest=config_digest,
            entrypoint=entrypoint,
            kind=kind,
            layers=layers,
            manifest_digest=manifest_digest,
            platform=platform,
            reference=reference,
            size_bytes=size_bytes,
            stored_at=stored_at,
            unpacked_size_bytes=unpacked_size_bytes,
            index_digest=index_digest,
            user=user,
            working_dir=working_dir,
        )

        image.additional_properties = d
        return image

    @property
    def additional_keys(self) -> list[str]:
        return list(self.additional_properties.keys())

    def __getitem__(self, key: str) -> Any:
        return self.additional_properties[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.additional_properties[key] = value

    def __delitem__(self, key: str) -> None:
        del self.additional_properties[key]

    def __contains__(self, key: str) -> bool:
        return key in self.additional_properties
