from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

if TYPE_CHECKING:
    from ..models.batch import Batch


T = TypeVar("T", bound="BatchCancelled")


@_attrs_define
class BatchCancelled:
    """What `POST /v1/batches/{id}/cancel` did, and the batch afterwards.

    Attributes:
        batch (Batch): A batch and its jobs counted by state.
        cancel_requested (int): Running jobs whose cancel was requested: their workers kill them within about a second
            and record `cancelled`.
        cancelled (int): Jobs that were waiting (queued or scheduled) and are now `cancelled`.
    """

    batch: Batch
    cancel_requested: int
    cancelled: int
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        batch = self.batch.to_dict()

        cancel_requested = self.cancel_requested

        cancelled = self.cancelled

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "batch": batch,
                "cancel_requested": cancel_requested,
                "cancelled": cancelled,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.batch import Batch

        d = dict(src_dict)
        batch = Batch.from_dict(d.pop("batch"))

        cancel_requested = d.pop("cancel_requested")

        cancelled = d.pop("cancelled")

        batch_cancelled = cls(
            batch=batch,
            cancel_requested=cancel_requested,
            cancelled=cancelled,
        )

        batch_cancelled.additional_properties = d
        return batch_cancelled

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
