from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define

from ..types import UNSET, Unset

T = TypeVar("T", bound="LimitsSpec")


@_attrs_define
class LimitsSpec:
    """Resource limits. Omitted fields take the operator's defaults; values above the operator's
    maxima are refused with 422.

        Attributes:
            cpu_time_ms (int | None | Unset): CPU-time limit in milliseconds (containers) → `cpu_timeout`.
            disk_bytes (int | None | Unset): Disk size in bytes: a container's writable layer; a Wasm job's directory at `/`
                (writes
                past it fail with ENOSPC).
            fuel (int | None | Unset): Wasm fuel budget (≈ instructions) → `cpu_timeout`.
            memory_bytes (int | None | Unset): Memory limit in bytes → `memory_limit`.
            output_bytes (int | None | Unset): Bytes kept per output stream → `output_limit`, stream flagged truncated.
            pids (int | None | Unset): Maximum number of processes (containers).
            wall_time_ms (int | None | Unset): Wall-clock limit in milliseconds → `wall_timeout`.
    """

    cpu_time_ms: int | None | Unset = UNSET
    disk_bytes: int | None | Unset = UNSET
    fuel: int | None | Unset = UNSET
    memory_bytes: int | None | Unset = UNSET
    output_bytes: int | None | Unset = UNSET
    pids: int | None | Unset = UNSET
    wall_time_ms: int | None | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        cpu_time_ms: int | None | Unset
        if isinstance(self.cpu_time_ms, Unset):
            cpu_time_ms = UNSET
        else:
            cpu_time_ms = self.cpu_time_ms

        disk_bytes: int | None | Unset
        if isinstance(self.disk_bytes, Unset):
            disk_bytes = UNSET
        else:
            disk_bytes = self.disk_bytes

        fuel: int | None | Unset
        if isinstance(self.fuel, Unset):
            fuel = UNSET
        else:
            fuel = self.fuel

        memory_bytes: int | None | Unset
        if isinstance(self.memory_bytes, Unset):
            memory_bytes = UNSET
        else:
            memory_bytes = self.memory_bytes

        output_bytes: int | None | Unset
        if isinstance(self.output_bytes, Unset):
            output_bytes = UNSET
        else:
            output_bytes = self.output_bytes

        pids: int | None | Unset
        if isinstance(self.pids, Unset):
            pids = UNSET
        else:
            pids = self.pids

        wall_time_ms: int | None | Unset
        if isinstance(self.wall_time_ms, Unset):
            wall_time_ms = UNSET
        else:
            wall_time_ms = self.wall_time_ms

        field_dict: dict[str, Any] = {}

        field_dict.update({})
        if cpu_time_ms is not UNSET:
            field_dict["cpu_time_ms"] = cpu_time_ms
        if disk_bytes is not UNSET:
            field_dict["disk_bytes"] = disk_bytes
        if fuel is not UNSET:
            field_dict["fuel"] = fuel
        if memory_bytes is not UNSET:
            field_dict["memory_bytes"] = memory_bytes
        if output_bytes is not UNSET:
            field_dict["output_bytes"] = output_bytes
        if pids is not UNSET:
            field_dict["pids"] = pids
        if wall_time_ms is not UNSET:
            field_dict["wall_time_ms"] = wall_time_ms

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)

        def _parse_cpu_time_ms(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        cpu_time_ms = _parse_cpu_time_ms(d.pop("cpu_time_ms", UNSET))

        def _parse_disk_bytes(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        disk_bytes = _parse_disk_bytes(d.pop("disk_bytes", UNSET))

        def _parse_fuel(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        fuel = _parse_fuel(d.pop("fuel", UNSET))

        def _parse_memory_bytes(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        memory_bytes = _parse_memory_bytes(d.pop("memory_bytes", UNSET))

        def _parse_output_bytes(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        output_bytes = _parse_output_bytes(d.pop("output_bytes", UNSET))

        def _parse_pids(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        pids = _parse_pids(d.pop("pids", UNSET))

        def _parse_wall_time_ms(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        wall_time_ms = _parse_wall_time_ms(d.pop("wall_time_ms", UNSET))

        limits_spec = cls(
            cpu_time_ms=cpu_time_ms,
            disk_bytes=disk_bytes,
            fuel=fuel,
            memory_bytes=memory_bytes,
            output_bytes=output_bytes,
            pids=pids,
            wall_time_ms=wall_time_ms,
        )

        return limits_spec
