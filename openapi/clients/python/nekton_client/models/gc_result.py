from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

T = TypeVar("T", bound="GcResult")


@_attrs_define
class GcResult:
    """What `POST /v1/images/gc` removed.

    Attributes:
        freed_bytes (int):
        removed_blobs (list[str]):
        removed_layers (list[str]):
    """

    freed_bytes: int
    removed_blobs: list[str]
    removed_layers: list[str]
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        freed_bytes = self.freed_bytes

        removed_blobs = self.removed_blobs

        removed_layers = self.removed_layers

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "freed_bytes": freed_bytes,
                "removed_blobs": removed_blobs,
                "removed_layers": removed_layers,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        freed_bytes = d.pop("freed_bytes")

        removed_blobs = cast(list[str], d.pop("removed_blobs"))

        removed_layers = cast(list[str], d.pop("removed_layers"))

        gc_result = cls(
            freed_bytes=freed_bytes,
            removed_blobs=removed_blobs,
            removed_layers=removed_layers,
        )

        gc_result.additional_properties = d
        return gc_result

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
