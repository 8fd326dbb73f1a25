from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

if TYPE_CHECKING:
    from ..models.stream_output import StreamOutput


T = TypeVar("T", bound="JobOutput")


@_attrs_define
class JobOutput:
    """A finished job's output, carried by the answer of a waiting submission: each stream's bytes in
    the order written, up to [`JobOutput::LIMIT`] bytes per stream.

        Attributes:
            stderr (StreamOutput): One stream's output. Exactly one of `text` and `base64` is set: `text` when the bytes are
                valid UTF-8, otherwise `base64` of the raw bytes.
            stdout (StreamOutput): One stream's output. Exactly one of `text` and `base64` is set: `text` when the bytes are
                valid UTF-8, otherwise `base64` of the raw bytes.
    """

    stderr: StreamOutput
    stdout: StreamOutput
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        stderr = self.stderr.to_dict()

        stdout = self.stdout.to_dict()

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "stderr": stderr,
                "stdout": stdout,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.stream_output import StreamOutput

        d = dict(src_dict)
        stderr = StreamOutput.from_dict(d.pop("stderr"))

        stdout = StreamOutput.from_dict(d.pop("stdout"))

        job_output = cls(
            stderr=stderr,
            stdout=stdout,
        )

        job_output.additional_properties = d
        return job_output

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
