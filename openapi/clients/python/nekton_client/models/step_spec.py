from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from attrs import define as _attrs_define

from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.input_file_spec import InputFileSpec
    from ..models.limits_spec import LimitsSpec


T = TypeVar("T", bound="StepSpec")


@_attrs_define
class StepSpec:
    """A build or checker step.

    Attributes:
        command (list[str] | Unset): Containers: the step's argv, run in the job's image (it replaces the image's
            entrypoint
            and cmd), e.g. `["sh", "-c", "cc -O2 -o prog main.c"]`. Wasm: the arguments of `module`.
            A checker gets three more: the paths of the case's input, the expected output and the
            program's output; it exits 0 to accept, 1 (or 2) to reject, and its stdout is the message.
        files (list[InputFileSpec] | Unset): More input files for this step.
        limits (LimitsSpec | None | Unset):
        module (None | str | Unset): Wasm jobs: the step's module (`sha256:...` from `POST /v1/modules`).
    """

    command: list[str] | Unset = UNSET
    files: list[InputFileSpec] | Unset = UNSET
    limits: LimitsSpec | None | Unset = UNSET
    module: None | str | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        from ..models.limits_spec import LimitsSpec

        command: list[str] | Unset = UNSET
        if not isinstance(self.command, Unset):
            command = self.command

        files: list[dict[str, Any]] | Unset = UNSET
        if not isinstance(self.files, Unset):
            files = []
            for files_item_data in self.files:
                files_item = files_item_data.to_dict()
                files.append(files_item)

        limits: dict[str, Any] | None | Unset
        if isinstance(self.limits, Unset):
            limits = UNSET
        elif isinstance(self.limits, LimitsSpec):
            limits = self.limits.to_dict()
        else:
            limits = self.limits

        module: None | str | Unset
        if isinstance(self.module, Unset):
            module = UNSET
        else:
            module = self.module

        field_dict: dict[str, Any] = {}

        field_dict.update({})
        if command is not UNSET:
            field_dict["command"] = command
        if files is not UNSET:
            field_dict["files"] = files
        if limits is not UNSET:
            field_dict["limits"] = limits
        if module is not UNSET:
            field_dict["module"] = module

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.input_file_spec import InputFileSpec
        from ..models.limits_spec import LimitsSpec

        d = dict(src_dict)
        command = cast(list[str], d.pop("command", UNSET))

        _files = d.pop("files", UNSET)
        files: list[InputFileSpec] | Unset = UNSET
        if _files is not UNSET:
            files = []
            for files_item_data in _files:
                files_item = InputFileSpec.from_dict(files_item_data)

                files.append(files_item)

        def _parse_limits(data: object) -> LimitsSpec | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                limits_type_0 = LimitsSpec.from_dict(data)

                return limits_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(LimitsSpec | None | Unset, data)

        limits = _parse_limits(d.pop("limits", UNSET))

        def _parse_module(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        module = _parse_module(d.pop("module", UNSET))

        step_spec = cls(
            command=command,
            files=files,
            limits=limits,
            module=module,
        )

        return step_spec
