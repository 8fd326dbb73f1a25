from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

if TYPE_CHECKING:
    from ..models.artifact_entry import ArtifactEntry
    from ..models.skipped_artifact_entry import SkippedArtifactEntry


T = TypeVar("T", bound="ArtifactList")


@_attrs_define
class ArtifactList:
    """A job's artifacts: the files its latest attempt left that its `artifacts` patterns matched,
    collected after it ended (regular files only; see docs/artifacts.md).

        Attributes:
            artifacts (list[ArtifactEntry]): The collected files, sorted by path (a test suite's case files under
                `cases/NAME/`).
            attempt (int): The attempt these artifacts are from (the job's latest; 0 if it never ran).
            skipped (list[SkippedArtifactEntry]): Matches that were not collected, with why (symlinks, hard links,
                directories, caps).
    """

    artifacts: list[ArtifactEntry]
    attempt: int
    skipped: list[SkippedArtifactEntry]
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        artifacts = []
        for artifacts_item_data in self.artifacts:
            artifacts_item = artifacts_item_data.to_dict()
            artifacts.append(artifacts_item)

        attempt = self.attempt

        skipped = []
        for skipped_item_data in self.skipped:
            skipped_item = skipped_item_data.to_dict()
            skipped.append(skipped_item)

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "artifacts": artifacts,
                "attempt": attempt,
                "skipped": skipped,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.artifact_entry import ArtifactEntry
        from ..models.skipped_artifact_entry import SkippedArtifactEntry

        d = dict(src_dict)
        artifacts = []
        _artifacts = d.pop("artifacts")
        for artifacts_item_data in _artifacts:
            artifacts_item = ArtifactEntry.from_dict(artifacts_item_data)

            artifacts.append(artifacts_item)

        attempt = d.pop("attempt")

        skipped = []
        _skipped = d.pop("skipped")
        for skipped_item_data in _skipped:
            skipped_item = SkippedArtifactEntry.from_dict(skipped_item_data)

            skipped.append(skipped_item)

        artifact_list = cls(
            artifacts=artifacts,
            attempt=attempt,
            skipped=skipped,
        )

        artifact_list.additional_properties = d
        return artifact_list

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
