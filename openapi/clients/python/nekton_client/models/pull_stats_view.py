from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

T = TypeVar("T", bound="PullStatsView")


@_attrs_define
class PullStatsView:
    """What a pull fetched.

    Attributes:
        blobs_cached (int): Blobs that were already stored (nothing downloaded for them).
        blobs_downloaded (int):
        bytes_downloaded (int):
        layers_extracted (int):
    """

    blobs_cached: int
    blobs_downloaded: int
    bytes_downloaded: int
    layers_extracted: int
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        blobs_cached = self.blobs_cached

        blobs_downloaded = self.blobs_downloaded

        bytes_downloaded = self.bytes_downloaded

        layers_extracted = self.layers_extracted

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "blobs_cached": blobs_cached,
                "blobs_downloaded": blobs_downloaded,
                "bytes_downloaded": bytes_downloaded,
                "layers_extracted": layers_extracted,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        blobs_cached = d.pop("blobs_cached")

        blobs_downloaded = d.pop("blobs_downloaded")

        bytes_downloaded = d.pop("bytes_downloaded")

        layers_extracted = d.pop("layers_extracted")

        pull_stats_view = cls(
            blobs_cached=blobs_cached,
            blobs_downloaded=blobs_downloaded,
            bytes_downloaded=bytes_downloaded,
            layers_extracted=layers_extracted,
        )

        pull_stats_view.additional_properties = d
        return pull_stats_view

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
