from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

if TYPE_CHECKING:
    from ..models.image import Image
    from ..models.pull_stats_view import PullStatsView


T = TypeVar("T", bound="PullResult")


@_attrs_define
class PullResult:
    """The answer to a pull (and the payload of the SSE `done` event).

    Attributes:
        coalesced (bool): This request joined a pull of the same image already in progress.
        from_cache (bool): The image was already stored and the registry was not contacted.
        image (Image): An image in a worker host's store.
        stats (PullStatsView): What a pull fetched.
    """

    coalesced: bool
    from_cache: bool
    image: Image
    stats: PullStatsView
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        coalesced = self.coalesced

        from_cache = self.from_cache

        image = self.image.to_dict()

        stats = self.stats.to_dict()

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "coalesced": coalesced,
                "from_cache": from_cache,
                "image": image,
                "stats": stats,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.image import Image
        from ..models.pull_stats_view import PullStatsView

        d = dict(src_dict)
        coalesced = d.pop("coalesced")

        from_cache = d.pop("from_cache")

        image = Image.from_dict(d.pop("image"))

        stats = PullStatsView.from_dict(d.pop("stats"))

        pull_result = cls(
            coalesced=coalesced,
            from_cache=from_cache,
            image=image,
            stats=stats,
        )

        pull_result.additional_properties = d
        return pull_result

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
