from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

if TYPE_CHECKING:
    from ..models.pull_blob import PullBlob


T = TypeVar("T", bound="PullResolvedEvent")


@_attrs_define
class PullResolvedEvent:
    """SSE `resolved`: the manifest is known.

    Attributes:
        layers (list[PullBlob]): The layers (bottom first) with their sizes: one progress bar each.
        manifest_digest (str):
        platform (None | str):
        reference (str):
    """

    layers: list[PullBlob]
    manifest_digest: str
    platform: None | str
    reference: str
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        layers = []
        for layers_item_data in self.layers:
            layers_item = layers_item_data.to_dict()
            layers.append(layers_item)

        manifest_digest = self.manifest_digest

        platform: None | str
        platform = self.platform

        reference = self.reference

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "layers": layers,
                "manifest_digest": manifest_digest,
                "platform": platform,
                "reference": reference,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.pull_blob import PullBlob

        d = dict(src_dict)
        layers = []
        _layers = d.pop("layers")
        for layers_item_data in _layers:
            layers_item = PullBlob.from_dict(layers_item_data)

            layers.append(layers_item)

        manifest_digest = d.pop("manifest_digest")

        def _parse_platform(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        platform = _parse_platform(d.pop("platform"))

        reference = d.pop("reference")

        pull_resolved_event = cls(
            layers=layers,
            manifest_digest=manifest_digest,
            platform=platform,
            reference=reference,
        )

        pull_resolved_event.additional_properties = d
        return pull_resolved_event

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
