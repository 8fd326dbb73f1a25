from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar
from uuid import UUID

from attrs import define as _attrs_define
from attrs import field as _attrs_field

if TYPE_CHECKING:
    from ..models.batch_counts import BatchCounts
    from ..models.batch_labels import BatchLabels


T = TypeVar("T", bound="Batch")


@_attrs_define
class Batch:
    """A batch and its jobs counted by state.

    Attributes:
        counts (BatchCounts): Every state, with 0 where no job is in it.
        created_at (datetime.datetime):
        finished (bool): True when every job has reached a final state.
        id (UUID):
        labels (BatchLabels):
        total (int):
    """

    counts: BatchCounts
    created_at: datetime.datetime
    finished: bool
    id: UUID
    labels: BatchLabels
    total: int
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        counts = self.counts.to_dict()

        created_at = self.created_at.isoformat()

        finished = self.finished

        id = str(self.id)

        labels = self.labels.to_dict()

        total = self.total

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "counts": counts,
                "created_at": created_at,
                "finished": finished,
                "id": id,
                "labels": labels,
                "total": total,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.batch_counts import BatchCounts
        from ..models.batch_labels import BatchLabels

        d = dict(src_dict)
        counts = BatchCounts.from_dict(d.pop("counts"))

        created_at = datetime.datetime.fromisoformat(d.pop("created_at"))

        finished = d.pop("finished")

        id = UUID(d.pop("id"))

        labels = BatchLabels.from_dict(d.pop("labels"))

        total = d.pop("total")

        batch = cls(
            counts=counts,
            created_at=created_at,
            finished=finished,
            id=id,
            labels=labels,
            total=total,
        )

        batch.additional_properties = d
        return batch

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
