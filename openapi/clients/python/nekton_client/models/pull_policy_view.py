from enum import StrEnum


class PullPolicyView(StrEnum):
    ALWAYS = "always"
    IF_NOT_PRESENT = "if_not_present"

    def __str__(self) -> str:
        return str(self.value)
