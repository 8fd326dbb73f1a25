from enum import StrEnum


class JobState(StrEnum):
    CANCELLED = "cancelled"
    ERROR = "error"
    FAILED = "failed"
    QUEUED = "queued"
    RUNNING = "running"
    SCHEDULED = "scheduled"
    SUCCEEDED = "succeeded"

    def __str__(self) -> str:
        return str(self.value)
