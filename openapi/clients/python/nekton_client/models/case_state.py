from enum import StrEnum


class CaseState(StrEnum):
    FINISHED = "finished"
    PENDING = "pending"
    RUNNING = "running"

    def __str__(self) -> str:
        return str(self.value)
