from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from attrs import define as _attrs_define

from ..models.encoding import Encoding
from ..models.network_mode import NetworkMode
from ..models.runtime_kind import RuntimeKind
from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.input_file_spec import InputFileSpec
    from ..models.job_spec_env import JobSpecEnv
    from ..models.job_spec_labels import JobSpecLabels
    from ..models.limits_spec import LimitsSpec
    from ..models.network_policy import NetworkPolicy
    from ..models.test_suite_spec import TestSuiteSpec
    from ..models.wasm_spec import WasmSpec


T = TypeVar("T", bound="JobSpec")


@_attrs_define
class JobSpec:
    """A job to run. Exactly one of `module` and `image` names the code.

    Attributes:
        args (list[str] | Unset): Arguments after the program name (for images: replaces the image's cmd).
        artifacts (list[str] | Unset): Files to keep after the job, downloadable with `GET /v1/jobs/{id}/artifacts`:
            paths or
            glob patterns (`*`, `?`, `[...]` within a path component, `**` for any depth), relative to
            the working directory (Wasm: the job's `/`) or absolute; at most 64, each at most 1024
            bytes, no `..` or empty component. Only regular files the job wrote are kept (never a
            symlink or a hard link), each up to the operator's per-file cap (cut and flagged past it).
        entrypoint (list[str] | None | Unset): Images only: replaces the image's entrypoint (and then the image's cmd is
            not used:
            the program is `entrypoint ++ args`). Docker's rules: without `entrypoint`, the program is
            the image's entrypoint followed by `args`, or by the image's cmd when `args` is empty.
        env (JobSpecEnv | Unset):
        files (list[InputFileSpec] | Unset):
        image (None | str | Unset): An OCI image reference, normalised like Docker's (`busybox` →
            `docker.io/library/busybox:latest`; `host:port/repo:tag`, `repo@sha256:...`). The worker
            pulls it if it has not yet (concurrent jobs on one image share one pull). A Wasm artifact
            image runs on the Wasm backend, any other image as a Linux container.
        labels (JobSpecLabels | Unset): Free-form key/value labels; filter with `GET /v1/jobs?label=key=value`.
        limits (LimitsSpec | None | Unset):
        max_attempts (int | None | Unset): Attempts allowed when the infrastructure fails (a worker dies). Never retried
            for the job's
            own failures. Default 3.
        module (None | str | Unset): Digest of a Wasm module uploaded with `POST /v1/modules` (`sha256:<hex>`).
        network (NetworkMode | NetworkPolicy | None | Unset):
        priority (int | None | Unset): Higher runs first within a queue. Default 0, range -1000..=1000.
        queue (None | str | Unset): Queue name. Default `default`.
        runtime (None | RuntimeKind | Unset):
        stdin (None | str | Unset): Bytes fed to the job's stdin (closed after them).
        stdin_encoding (Encoding | None | Unset):
        tests (None | TestSuiteSpec | Unset):
        user (None | str | Unset): `uid[:gid]` (numbers) or `name[:group]` from the image's `/etc/passwd` and
            `/etc/group`
            (containers). Default: the image's user, else root (uid 0 in the container).
        wasm (None | Unset | WasmSpec):
        workdir (None | str | Unset): Working directory (containers): an absolute path, created if missing; input files
            are
            written relative to it. Default: the image's.
    """

    args: list[str] | Unset = UNSET
    artifacts: list[str] | Unset = UNSET
    entrypoint: list[str] | None | Unset = UNSET
    env: JobSpecEnv | Unset = UNSET
    files: list[InputFileSpec] | Unset = UNSET
    image: None | str | Unset = UNSET
    labels: JobSpecLabels | Unset = UNSET
    limits: LimitsSpec | None | Unset = UNSET
    max_attempts: int | None | Unset = UNSET
    module: None | str | Unset = UNSET
    network: NetworkMode | NetworkPolicy | None | Unset = UNSET
    priority: int | None | Unset = UNSET
    queue: None | str | Unset = UNSET
    runtime: None | RuntimeKind | Unset = UNSET
    stdin: None | str | Unset = UNSET
    stdin_encoding: Encoding | None | Unset = UNSET
    tests: None | TestSuiteSpec | Unset = UNSET
    user: None | str | Unset = UNSET
    wasm: None | Unset | WasmSpec = UNSET
    workdir: None | str | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        from ..models.limits_spec import LimitsSpec
        from ..models.network_policy import NetworkPolicy
        from ..models.test_suite_spec import TestSuiteSpec
        from ..models.wasm_spec import WasmSpec

        args: list[str] | Unset = UNSET
        if not isinstance(self.args, Unset):
            args = self.args

        artifacts: list[str] | Unset = UNSET
        if not isinstance(self.artifacts, Unset):
            artifacts = self.artifacts

        entrypoint: list[str] | None | Unset
        if isinstance(self.entrypoint, Unset):
            entrypoint = UNSET
        elif isinstance(self.entrypoint, list):
            entrypoint = self.entrypoint

        else:
            entrypoint = self.entrypoint

        env: dict[str, Any] | Unset = UNSET
        if not isinstance(self.env, Unset):
            env = self.env.to_dict()

        files: list[dict[str, Any]] | Unset = UNSET
        if not isinstance(self.files, Unset):
            files = []
            for files_item_data in self.files:
                files_item = files_item_data.to_dict()
                files.append(files_item)

        image: None | str | Unset
        if isinstance(self.image, Unset):
            image = UNSET
        else:
            image = self.image

        labels: dict[str, Any] | Unset = UNSET
        if not isinstance(self.labels, Unset):
            labels = self.labels.to_dict()

        limits: dict[str, Any] | None | Unset
        if isinstance(self.limits, Unset):
            limits = UNSET
        elif isinstance(self.limits, LimitsSpec):
            limits = self.limits.to_dict()
        else:
            limits = self.limits

        max_attempts: int | None | Unset
        if isinstance(self.max_attempts, Unset):
            max_attempts = UNSET
        else:
            max_attempts = self.max_attempts

        module: None | str | Unset
        if isinstance(self.module, Unset):
            module = UNSET
        else:
            module = self.module

        network: dict[str, Any] | None | str | Unset
        if isinstance(self.network, Unset):
            network = UNSET
        elif isinstance(self.network, NetworkMode):
            network = self.network.value
        elif isinstance(self.network, NetworkPolicy):
            network = self.network.to_dict()
        else:
            network = self.network

        priority: int | None | Unset
        if isinstance(self.priority, Unset):
            priority = UNSET
        else:
            priority = self.priority

        queue: None | str | Unset
        if isinstance(self.queue, Unset):
            queue = UNSET
        else:
            queue = self.queue

        runtime: None | str | Unset
        if isinstance(self.runtime, Unset):
            runtime = UNSET
        elif isinstance(self.runtime, RuntimeKind):
            runtime = self.runtime.value
        else:
            runtime = self.runtime

        stdin: None | str | Unset
        if isinstance(self.stdin, Unset):
            stdin = UNSET
        else:
            stdin = self.stdin

        stdin_encoding: None | str | Unset
        if isinstance(self.stdin_encoding, Unset):
            stdin_encoding = UNSET
        elif isinstance(self.stdin_encoding, Encoding):
            stdin_encoding = self.stdin_encoding.value
        else:
            stdin_encoding = self.stdin_encoding

        tests: dict[str, Any] | None | Unset
        if isinstance(self.tests, Unset):
            tests = UNSET
        elif isinstance(self.tests, TestSuiteSpec):
            tests = self.tests.to_dict()
        else:
            tests = self.tests

        user: None | str | Unset
        if isinstance(self.user, Unset):
            user = UNSET
        else:
            user = self.user

        wasm: dict[str, Any] | None | Unset
        if isinstance(self.wasm, Unset):
            wasm = UNSET
        elif isinstance(self.wasm, WasmSpec):
            wasm = self.wasm.to_dict()
        else:
            wasm = self.wasm

        workdir: None | str | Unset
        if isinstance(self.workdir, Unset):
            workdir = UNSET
        else:
            workdir = self.workdir

        field_dict: dict[str, Any] = {}

        field_dict.update({})
        if args is not UNSET:
            field_dict["args"] = args
        if artifacts is not UNSET:
            field_dict["artifacts"] = artifacts
        if entrypoint is not UNSET:
            field_dict["entrypoint"] = entrypoint
        if env is not UNSET:
            field_dict["env"] = env
        if files is not UNSET:
            field_dict["files"] = files
        if image is not UNSET:
            field_dict["image"] = image
        if labels is not UNSET:
            field_dict["labels"] = labels
        if limits is not UNSET:
            field_dict["limits"] = limits
        if max_attempts is not UNSET:
            field_dict["max_attempts"] = max_attempts
        if module is not UNSET:
            field_dict["module"] = module
        if network is not UNSET:
            field_dict["network"] = network
        if priority is not UNSET:
            field_dict["priority"] = priority
        if queue is not UNSET:
            field_dict["queue"] = queue
        if runtime is not UNSET:
            field_dict["runtime"] = runtime
        if stdin is not UNSET:
            field_dict["stdin"] = stdin
        if stdin_encoding is not UNSET:
            field_dict["stdin_encoding"] = stdin_encoding
        if tests is not UNSET:
            field_dict["tests"] = tests
        if user is not UNSET:
            field_dict["user"] = user
        if wasm is not UNSET:
            field_dict["wasm"] = wasm
        if workdir is not UNSET:
            field_dict["workdir"] = workdir

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.input_file_spec import InputFileSpec
        from ..models.job_spec_env import JobSpecEnv
        from ..models.job_spec_labels import JobSpecLabels
        from ..models.limits_spec import LimitsSpec
        from ..models.network_policy import NetworkPolicy
        from ..models.test_suite_spec import TestSuiteSpec
        from ..models.wasm_spec import WasmSpec

        d = dict(src_dict)
        args = cast(list[str], d.pop("args", UNSET))

        artifacts = cast(list[str], d.pop("artifacts", UNSET))

        def _parse_entrypoint(data: object) -> list[str] | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, list):
                    raise TypeError()
                entrypoint_type_0 = cast(list[str], data)

                return entrypoint_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(list[str] | None | Unset, data)

        entrypoint = _parse_entrypoint(d.pop("entrypoint", UNSET))

        _env = d.pop("env", UNSET)
        env: JobSpecEnv | Unset
        if isinstance(_env, Unset):
            env = UNSET
        else:
            env = JobSpecEnv.from_dict(_env)

        _files = d.pop("files", UNSET)
        files: list[InputFileSpec] | Unset = UNSET
        if _files is not UNSET:
            files = []
            for files_item_data in _files:
                files_item = InputFileSpec.from_dict(files_item_data)

                files.append(files_item)

        def _parse_image(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        image = _parse_image(d.pop("image", UNSET))

        _labels = d.pop("labels", UNSET)
        labels: JobSpecLabels | Unset
        if isinstance(_labels, Unset):
            labels = UNSET
        else:
            labels = JobSpecLabels.from_dict(_labels)

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

        def _parse_max_attempts(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        max_attempts = _parse_max_attempts(d.pop("max_attempts", UNSET))

        def _parse_module(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        module = _parse_module(d.pop("module", UNSET))

        def _parse_network(data: object) -> NetworkMode | NetworkPolicy | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                componentsschemas_network_spec_type_0 = NetworkMode(data)

                return componentsschemas_network_spec_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                componentsschemas_network_spec_type_1 = NetworkPolicy.from_dict(data)

                return componentsschemas_network_spec_type_1
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(NetworkMode | NetworkPolicy | None | Unset, data)

        network = _parse_network(d.pop("network", UNSET))

        def _parse_priority(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        priority = _parse_priority(d.pop("priority", UNSET))

        def _parse_queue(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        queue = _parse_queue(d.pop("queue", UNSET))

        def _parse_runtime(data: object) -> None | RuntimeKind | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                runtime_type_0 = RuntimeKind(data)

                return runtime_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(None | RuntimeKind | Unset, data)

        runtime = _parse_runtime(d.pop("runtime", UNSET))

        def _parse_stdin(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        stdin = _parse_stdin(d.pop("stdin", UNSET))

        def _parse_stdin_encoding(data: object) -> Encoding | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                stdin_encoding_type_0 = Encoding(data)

                return stdin_encoding_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(Encoding | None | Unset, data)

        stdin_encoding = _parse_stdin_encoding(d.pop("stdin_encoding", UNSET))

        def _parse_tests(data: object) -> None | TestSuiteSpec | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                tests_type_0 = TestSuiteSpec.from_dict(data)

                return tests_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(None | TestSuiteSpec | Unset, data)

        tests = _parse_tests(d.pop("tests", UNSET))

        def _parse_user(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        user = _parse_user(d.pop("user", UNSET))

        def _parse_wasm(data: object) -> None | Unset | WasmSpec:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                wasm_type_0 = WasmSpec.from_dict(data)

                return wasm_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(None | Unset | WasmSpec, data)

        wasm = _parse_wasm(d.pop("wasm", UNSET))

        def _parse_workdir(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        workdir = _parse_workdir(d.pop("workdir", UNSET))

        job_spec = cls(
            args=args,
            artifacts=artifacts,
            entrypoint=entrypoint,
            env=env,
            files=files,
            image=image,
            labels=labels,
            limits=limits,
            max_attempts=max_attempts,
            module=module,
            network=network,
            priority=priority,
            queue=queue,
            runtime=runtime,
            stdin=stdin,
            stdin_encoding=stdin_encoding,
            tests=tests,
            user=user,
            wasm=wasm,
            workdir=workdir,
        )

        return job_spec
