from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

T = TypeVar("T", bound="ArtifactEntry")


@_attrs_define
class ArtifactEntry:
    """One collected file.

    Attributes:
        mode (int): Unix permission bits (e.g. 420 = 0o644).
        path (str): Where it was found: relative to the working directory, or absolute for an absolute
            pattern. Download it at `/v1/jobs/{id}/artifacts/{path}`.
        sha256 (str): SHA-256 of the stored bytes, in hex. Example:
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855.
        size (int): The file's size when collected.
        stored_bytes (int): The bytes stored: less than `size` when a cap cut the file.
        truncated (bool): True when a cap cut the file (per file, or the run's total).
    """

    mode: int
    path: str
    sha256: str
    size: int
    stored_bytes: int
    truncated: bool
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        mode = self.mode

        path = self.path

        sha256 = self.sha256

        size = self.size

        stored_bytes = self.stored_bytes

        truncated = self.truncated

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "mode": mode,
                "path": path,
                "sha256": sha256,
                "size": size,
                "stored_bytes": stored_bytes,
                "truncated": truncated,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        mode = d.pop("mode")

        path = d.pop("path")

        sha256 = d.pop("sha256")

        size = d.pop("size")

        stored_bytes = d.pop("stored_bytes")

        truncated = d.pop("truncated")

        artifact_entry = cls(
            mode=mode,
            path=path,
            sha256=sha256,
            size=size,
            stored_bytes=stored_bytes,
            truncated=truncated,
        )

        artifact_entry.additional_properties = d
        return artifact_entry

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
