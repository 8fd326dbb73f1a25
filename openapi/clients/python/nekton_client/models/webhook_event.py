from enum import StrEnum


class WebhookEvent(StrEnum):
    BATCH_COMPLETED = "batch.completed"
    JOB_COMPLETED = "job.completed"

    def __str__(self) -> str:
        return str(self.value)
