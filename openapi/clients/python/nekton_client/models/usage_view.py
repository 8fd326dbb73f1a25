from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

T = TypeVar("T", bound="UsageView")


@_attrs_define
class UsageView:
    """The resource bill of a job's last attempt. Fields a backend cannot measure are null. Stored as
    JSON in `job_attempts.usage` and sent as is (`UsageView` in the API).

        Attributes:
            stderr_bytes (int):
            stderr_truncated (bool):
            stdout_bytes (int): Bytes kept of each stream, and whether more was written than kept.
            stdout_truncated (bool):
            cpu_system_ms (int | None | Unset):
            cpu_user_ms (int | None | Unset):
            fuel_consumed (int | None | Unset): Wasm only: fuel (≈ instructions) the job consumed.
            memory_peak_bytes (int | None | Unset):
            net_rx_bytes (int | None | Unset):
            net_tx_bytes (int | None | Unset):
            pids_limit_hit (bool | None | Unset): Containers: whether the pids limit refused a fork or thread of the job (a
                fork bomb, or a
                program that needed more processes than it was given). Null where the backend cannot tell
                (wasm; hosts without `pids.events`; bills written before this field existed).
            pids_peak (int | None | Unset):
            queue_wait_ms (int | None | Unset): From becoming runnable to being claimed by a worker.
            setup_ms (int | None | Unset): Preparing the sandbox (module compile/load, image, rootfs).
            wall_ms (int | None | Unset):
            wasm_memory_peak_bytes (int | None | Unset): Wasm only: the largest linear memory the job reached.
    """

    stderr_bytes: int
    stderr_truncated: bool
    stdout_bytes: int
    stdout_truncated: bool
    cpu_system_ms: int | None | Unset = UNSET
    cpu_user_ms: int | None | Unset = UNSET
    fuel_consumed: int | None | Unset = UNSET
    memory_peak_bytes: int | None | Unset = UNSET
    net_rx_bytes: int | None | Unset = UNSET
    net_tx_bytes: int | None | Unset = UNSET
    pids_limit_hit: bool | None | Unset = UNSET
    pids_peak: int | None | Unset = UNSET
    queue_wait_ms: int | None | Unset = UNSET
    setup_ms: int | None | Unset = UNSET
    wall_ms: int | None | Unset = UNSET
    wasm_memory_peak_bytes: int | None | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        stderr_bytes = self.stderr_bytes

        stderr_truncated = self.stderr_truncated

        stdout_bytes = self.stdout_bytes

        stdout_truncated = self.stdout_truncated

        cpu_system_ms: int | None | Unset
        if isinstance(self.cpu_system_ms, Unset):
            cpu_system_ms = UNSET
        else:
            cpu_system_ms = self.cpu_system_ms

        cpu_user_ms: int | None | Unset
        if isinstance(self.cpu_user_ms, Unset):
            cpu_user_ms = UNSET
        else:
            cpu_user_ms = self.cpu_user_ms

        fuel_consumed: int | None | Unset
        if isinstance(self.fuel_consumed, Unset):
            fuel_consumed = UNSET
        else:
            fuel_consumed = self.fuel_consumed

        memory_peak_bytes: int | None | Unset
        if isinstance(self.memory_peak_bytes, Unset):
            memory_peak_bytes = UNSET
        else:
            memory_peak_bytes = self.memory_peak_bytes

        net_rx_bytes: int | None | Unset
        if isinstance(self.net_rx_bytes, Unset):
            net_rx_bytes = UNSET
        else:
            net_rx_bytes = self.net_rx_bytes

        net_tx_bytes: int | None | Unset
        if isinstance(self.net_tx_bytes, Unset):
            net_tx_bytes = UNSET
        else:
            net_tx_bytes = self.net_tx_bytes

        pids_limit_hit: bool | None | Unset
        if isinstance(self.pids_limit_hit, Unset):
            pids_limit_hit = UNSET
        else:
            pids_limit_hit = self.pids_limit_hit

        pids_peak: int | None | Unset
        if isinstance(self.pids_peak, Unset):
            pids_peak = UNSET
        else:
            pids_peak = self.pids_peak

        queue_wait_ms: int | None | Unset
        if isinstance(self.queue_wait_ms, Unset):
            queue_wait_ms = UNSET
        else:
            queue_wait_ms = self.queue_wait_ms

        setup_ms: int | None | Unset
        if isinstance(self.setup_ms, Unset):
            setup_ms = UNSET
        else:
            setup_ms = self.setup_ms

        wall_ms: int | None | Unset
        if isinstance(self.wall_ms, Unset):
            wall_ms = UNSET
        else:
            wall_ms = self.wall_ms

        wasm_memory_peak_bytes: int | None | Unset
        if isinstance(self.wasm_memory_peak_bytes, Unset):
            wasm_memory_peak_bytes = UNSET
        else:
            wasm_memory_peak_bytes = self.wasm_memory_peak_bytes

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "stderr_bytes": stderr_bytes,
                "stderr_truncated": stderr_truncated,
                "stdout_bytes": stdout_bytes,
                "stdout_truncated": stdout_truncated,
            }
        )
        if cpu_system_ms is not UNSET:
            field_dict["cpu_system_ms"] = cpu_system_ms
        if cpu_user_ms is not UNSET:
            field_dict["cpu_user_ms"] = cpu_user_ms
        if fuel_consumed is not UNSET:
            field_dict["fuel_consumed"] = fuel_consumed
        if memory_peak_bytes is not UNSET:
            field_dict["memory_peak_bytes"] = memory_peak_bytes
        if net_rx_bytes is not UNSET:
            field_dict["net_rx_bytes"] = net_rx_bytes
        if net_tx_bytes is not UNSET:
            field_dict["net_tx_bytes"] = net_tx_bytes
        if pids_limit_hit is not UNSET:
            field_dict["pids_limit_hit"] = pids_limit_hit
        if pids_peak is not UNSET:
            field_dict["pids_peak"] = pids_peak
        if queue_wait_ms is not UNSET:
            field_dict["queue_wait_ms"] = queue_wait_ms
        if setup_ms is not UNSET:
            field_dict["setup_ms"] = setup_ms
        if wall_ms is not UNSET:
            field_dict["wall_ms"] = wall_ms
        if wasm_memory_peak_bytes is not UNSET:
            field_dict["wasm_memory_peak_bytes"] = wasm_memory_peak_bytes

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        stderr_bytes = d.pop("stderr_bytes")

        stderr_truncated = d.pop("stderr_truncated")

        stdout_bytes = d.pop("stdout_bytes")

        stdout_truncated = d.pop("stdout_truncated")

        def _parse_cpu_system_ms(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        cpu_system_ms = _parse_cpu_system_ms(d.pop("cpu_system_ms", UNSET))

        def _parse_cpu_user_ms(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        cpu_user_ms = _parse_cpu_user_ms(d.pop("cpu_user_ms", UNSET))

        def _parse_fuel_consumed(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        fuel_consumed = _parse_fuel_consumed(d.pop("fuel_consumed", UNSET))

        def _parse_memory_peak_bytes(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        memory_peak_bytes = _parse_memory_peak_bytes(d.pop("memory_peak_bytes", UNSET))

        def _parse_net_rx_bytes(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        net_rx_bytes = _parse_net_rx_bytes(d.pop("net_rx_bytes", UNSET))

        def _parse_net_tx_bytes(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        net_tx_bytes = _parse_net_tx_bytes(d.pop("net_tx_bytes", UNSET))

        def _parse_pids_limit_hit(data: object) -> bool | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(bool | None | Unset, data)

        pids_limit_hit = _parse_pids_limit_hit(d.pop("pids_limit_hit", UNSET))

        def _parse_pids_peak(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        pids_peak = _parse_pids_peak(d.pop("pids_peak", UNSET))

        def _parse_queue_wait_ms(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        queue_wait_ms = _parse_queue_wait_ms(d.pop("queue_wait_ms", UNSET))

        def _parse_setup_ms(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        setup_ms = _parse_setup_ms(d.pop("setup_ms", UNSET))

        def _parse_wall_ms(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        wall_ms = _parse_wall_ms(d.pop("wall_ms", UNSET))

        def _parse_wasm_memory_peak_bytes(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        wasm_memory_peak_bytes = _parse_wasm_memory_peak_bytes(
            d.pop("wasm_memory_peak_bytes", UNSET)
        )

        usage_view = cls(
            stderr_bytes=stderr_bytes,
            stderr_truncated=stderr_truncated,
            stdout_bytes=stdout_bytes,
            stdout_truncated=stdout_truncated,
            cpu_system_ms=cpu_system_ms,
            cpu_user_ms=cpu_user_ms,
            fuel_consumed=fuel_consumed,
            memory_peak_bytes=memory_peak_bytes,
            net_rx_bytes=net_rx_bytes,
            net_tx_bytes=net_tx_bytes,
            pids_limit_hit=pids_limit_hit,
            pids_peak=pids_peak,
            queue_wait_ms=queue_wait_ms,
            setup_ms=setup_ms,
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
