from enum import StrEnum


class OutcomeViewReason(StrEnum):
    CANCELLED = "cancelled"
    COMPILE_ERROR = "compile_error"
    CPU_TIMEOUT = "cpu_timeout"
    EXITED = "exited"
    IMAGE_ERROR = "image_error"
    INTERNAL_ERROR = "internal_error"
    MEMORY_LIMIT = "memory_limit"
    OUTPUT_LIMIT = "output_limit"
    SIGNALED = "signaled"
    SPEC_ERROR = "spec_error"
    TESTS_FAILED = "tests_failed"
    WALL_TIMEOUT = "wall_timeout"
    WORKER_LOST = "worker_lost"

    def __str__(self) -> str:
        return str(self.value)
