from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar

from attrs import define as _attrs_define

from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.batch_spec_labels import BatchSpecLabels
    from ..models.job_spec import JobSpec


T = TypeVar("T", bound="BatchSpec")


@_attrs_define
class BatchSpec:
    """Many jobs submitted at once, sharing defaults.

    Attributes:
        jobs (list[JobSpec]): The jobs (1 to 10,000), each a job spec (what `defaults` does not give).
        defaults (JobSpec | Unset): A job to run. Exactly one of `module` and `image` names the code.
        labels (BatchSpecLabels | Unset):
    """

    jobs: list[JobSpec]
    defaults: JobSpec | Unset = UNSET
    labels: BatchSpecLabels | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        jobs = []
        for jobs_item_data in self.jobs:
            jobs_item = jobs_item_data.to_dict()
            jobs.append(jobs_item)

        defaults: dict[str, Any] | Unset = UNSET
        if not isinstance(self.defaults, Unset):
            defaults = self.defaults.to_dict()

        labels: dict[str, Any] | Unset = UNSET
        if not isinstance(self.labels, Unset):
            labels = self.labels.to_dict()

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "jobs": jobs,
            }
        )
        if defaults is not UNSET:
            field_dict["defaults"] = defaults
        if labels is not UNSET:
            field_dict["labels"] = labels

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.batch_spec_labels import BatchSpecLabels
        from ..models.job_spec import JobSpec

        d = dict(src_dict)
        jobs = []
        _jobs = d.pop("jobs")
        for jobs_item_data in _jobs:
            jobs_item = JobSpec.from_dict(jobs_item_data)

            jobs.append(jobs_item)

        _defaults = d.pop("defaults", UNSET)
        defaults: JobSpec | Unset
        if isinstance(_defaults, Unset):
            defaults = UNSET
        else:
            defaults = JobSpec.from_dict(_defaults)

        _labels = d.pop("labels", UNSET)
        labels: BatchSpecLabels | Unset
        if isinstance(_labels, Unset):
            labels = UNSET
        else:
            labels = BatchSpecLabels.from_dict(_labels)

        batch_spec = cls(
            jobs=jobs,
            defaults=defaults,
            labels=labels,
        )

        return batch_spec
