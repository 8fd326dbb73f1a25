from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

T = TypeVar("T", bound="UsageView")


@_attrs_define
class UsageView:
    """The resource bill of a job's last attempt. Fields a backend cannot measure are null. Stored as
    JSON in `job_attempts.usage` and sent as is (`UsageView` in the API).

        Attributes:
            cpu_system_ms (int | None):
            cpu_user_ms (int | None):
            disk_used_bytes (int | None): Bytes the job's writable storage held when it ended, its input files included: a
                container's writable layer; a Wasm job's directory when it has a size cap
                (`limits.disk_bytes`). Null where the backend cannot tell (and in bills written before
                this field existed).
            fuel_consumed (int | None): Wasm only: fuel (≈ instructions) the job consumed.
            memory_peak_bytes (int | None):
            net_rx_bytes (int | None):
            net_tx_bytes (int | None):
            pids_limit_hit (bool | None): Containers: whether the pids limit refused a fork or thread of the job (a fork
                bomb, or a
                program that needed more processes than it was given). Null where the backend cannot tell
                (wasm; hosts without `pids.events`; bills written before this field existed).
            pids_peak (int | None):
            queue_wait_ms (int | None): From becoming runnable to being claimed by a worker.
            setup_ms (int | None): Preparing the sandbox (module compile/load, image, rootfs).
            stderr_bytes (int):
            stderr_truncated (bool):
            stdout_bytes (int): Bytes kept of each stream, and whether more was written than kept.
            stdout_truncated (bool):
            wall_ms (int | None):
            wasm_memory_peak_bytes (int | None): Wasm only: the largest linear memory the job reached.
    """

    cpu_system_ms: int | None
    cpu_user_ms: int | None
    disk_used_bytes: int | None
    fuel_consumed: int | None
    memory_peak_bytes: int | None
    net_rx_bytes: int | None
    net_tx_bytes: int | None
    pids_limit_hit: bool | None
    pids_peak: int | None
    queue_wait_ms: int | None
    setup_ms: int | None
    stderr_bytes: int
    stderr_truncated: bool
    stdout_bytes: int
    stdout_truncated: bool
    wall_ms: int | None
    wasm_memory_peak_bytes: int | None
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        cpu_system_ms: int | None
        cpu_system_ms = self.cpu_system_ms

        cpu_user_ms: int | None
        cpu_user_ms = self.cpu_user_ms

        disk_used_bytes: int | None
        disk_used_bytes = self.disk_used_bytes

        fuel_consumed: int | None
        fuel_consumed = self.fuel_consumed

        memory_peak_bytes: int | None
        memory_peak_bytes = self.memory_peak_bytes

        net_rx_bytes: int | None
        net_rx_bytes = self.net_rx_bytes

        net_tx_bytes: int | None
        net_tx_bytes = self.net_tx_bytes

        pids_limit_hit: bool | None
        pids_limit_hit = self.pids_limit_hit

        pids_peak: int | None
        pids_peak = self.pids_peak

        queue_wait_ms: int | None
        queue_wait_ms = self.queue_wait_ms

        setup_ms: int | None
        setup_ms = self.setup_ms

        stderr_bytes = self.stderr_bytes

        stderr_truncated = self.stderr_truncated

        stdout_bytes = self.stdout_bytes

        stdout_truncated = self.stdout_truncated

        wall_ms: int | None
        wall_ms = self.wall_ms

        wasm_memory_peak_bytes: int | None
        wasm_memory_peak_bytes = self.wasm_memory_peak_bytes

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "cpu_system_ms": cpu_system_ms,
                "cpu_user_ms": cpu_user_ms,
                "disk_used_bytes": disk_used_bytes,
                "fuel_consumed": fuel_consumed,
                "memory_peak_bytes": memory_peak_bytes,
                "net_rx_bytes": net_rx_bytes,
                "net_tx_bytes": net_tx_bytes,
                "pids_limit_hit": pids_limit_hit,
                "pids_peak": pids_peak,
                "queue_wait_ms": queue_wait_ms,
                "setup_ms": setup_ms,
                "stderr_bytes": stderr_bytes,
                "stderr_truncated": stderr_truncated,
                "stdout_bytes": stdout_bytes,
                "stdout_truncated": stdout_truncated,
                "wall_ms": wall_ms,
                "wasm_memory_peak_bytes": wasm_memory_peak_bytes,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)

        def _parse_cpu_system_ms(data: object) -> int | None:
            if data is None:
                return data
            return cast(int | None, data)

        cpu_system_ms = _parse_cpu_system_ms(d.pop("cpu_system_ms"))

        def _parse_cpu_user_ms(data: object) -> int | None:
            if data is None:
                return data
            return cast(int | None, data)

        cpu_user_ms = _parse_cpu_user_ms(d.pop("cpu_user_ms"))

        def _parse_disk_used_bytes(data: object) -> int | None:
            if data is None:
                return data
            return cast(int | None, data)

        disk_used_bytes = _parse_disk_used_bytes(d.pop("disk_used_bytes"))

        def _parse_fuel_consumed(data: object) -> int | None:
            if data is None:
                return data
            return cast(int | None, data)

        fuel_consumed = _parse_fuel_consumed(d.pop("fuel_consumed"))

        def _parse_memory_peak_bytes(data: object) -> int | None:
            if data is None:
                return data
            return cast(int | None, data)

        memory_peak_bytes = _parse_memory_peak_bytes(d.pop("memory_peak_bytes"))

        def _parse_net_rx_bytes(data: object) -> int | None:
            if data is None:
                return data
            return cast(int | None, data)

        net_rx_bytes = _parse_net_rx_bytes(d.pop("net_rx_bytes"))

        def _parse_net_tx_bytes(data: object) -> int | None:
            if data is None:
                return data
            return cast(int | None, data)

        net_tx_bytes = _parse_net_tx_bytes(d.pop("net_tx_bytes"))

        def _parse_pids_limit_hit(data: object) -> bool | None:
            if data is None:
                return data
            return cast(bool | None, data)

        pids_limit_hit = _parse_pids_limit_hit(d.pop("pids_limit_hit"))

        def _parse_pids_peak(data: object) -> int | None:
            if data is None:
                return data
            return cast(int | None, data)

        pids_peak = _parse_pids_peak(d.pop("pids_peak"))

        def _parse_queue_wait_ms(data: object) -> int | None:
            if data is None:
                return data
            return cast(int | None, data)

        queue_wait_ms = _parse_queue_wait_ms(d.pop("queue_wait_ms"))

        def _parse_setup_ms(data: object) -> int | None:
            if data is None:
                return data
            return cast(int | None, data)

        setup_ms = _parse_setup_ms(d.pop("setup_ms"))

        stderr_bytes = d.pop("stderr_bytes")

        stderr_truncated = d.pop("stderr_truncated")

        stdout_bytes = d.pop("stdout_bytes")

        stdout_truncated = d.pop("stdout_truncated")

        def _parse_wall_ms(data: object) -> int | None:
            if data is None:
                return data
            return cast(int | None, data)

        wall_ms = _parse_wall_ms(d.pop("wall_ms"))

        def _parse_wasm_memory_peak_bytes(data: object) -> int | None:
            if data is None:
                return data
            return cast(int | None, data)

        wasm_memory_peak_bytes = _parse_wasm_memory_peak_bytes(
            d.pop("wasm_memory_peak_bytes")
        )

        usage_view = cls(
            cpu_system_ms=cpu_system_ms,
            cpu_user_ms=cpu_user_ms,
            disk_used_bytes=disk_used_bytes,
            fuel_consumed=fuel_consumed,
            memory_peak_bytes=memory_peak_bytes,
            net_rx_bytes=net_rx_bytes,
            net_tx_bytes=net_tx_bytes,
            pids_limit_hit=pids_limit_hit,
            pids_peak=pids_peak,
            queue_wait_ms=queue_wait_ms,
            setup_ms=setup_ms,
            stderr_bytes=stderr_bytes,
            stderr_truncated=stderr_truncated,
            stdout_bytes=stdout_bytes,
            stdout_truncated=stdout_truncated,
            wall_ms=wall_ms,
            wasm_memory_peak_bytes=wasm_memory_peak_bytes,
        )

        usage_view.additional_properties = d
        return usage_view

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
