"""Contains all the data models used in inputs/outputs"""

from .artifact_entry import ArtifactEntry
from .artifact_list import ArtifactList
from .audit_entry import AuditEntry
from .audit_entry_detail import AuditEntryDetail
from .batch import Batch
from .batch_cancelled import BatchCancelled
from .batch_counts import BatchCounts
from .batch_created import BatchCreated
from .batch_labels import BatchLabels
from .batch_page import BatchPage
from .batch_spec import BatchSpec
from .batch_spec_labels import BatchSpecLabels
from .build_result import BuildResult
from .capped_text import CappedText
from .case_list import CaseList
from .case_result import CaseResult
from .case_spec import CaseSpec
from .case_started_event import CaseStartedEvent
from .case_state import CaseState
from .case_status import CaseStatus
from .compare import Compare
from .compare_mode import CompareMode
from .created_token import CreatedToken
from .created_webhook import CreatedWebhook
from .delivery import Delivery
from .delivery_attempt import DeliveryAttempt
from .delivery_page import DeliveryPage
from .delivery_payload import DeliveryPayload
from .delivery_state import DeliveryState
from .difference import Difference
from .encoding import Encoding
from .error_body import ErrorBody
from .error_detail import ErrorDetail
from .error_detail_code import ErrorDetailCode
from .exit_event import ExitEvent
from .expect_spec import ExpectSpec
from .gc_result import GcResult
from .image import Image
from .image_kind_view import ImageKindView
from .image_layer import ImageLayer
from .image_list import ImageList
from .import_result import ImportResult
from .input_file_spec import InputFileSpec
from .job import Job
from .job_labels import JobLabels
from .job_output import JobOutput
from .job_page import JobPage
from .job_spec import JobSpec
from .job_spec_env import JobSpecEnv
from .job_spec_labels import JobSpecLabels
from .job_state import JobState
from .limits_spec import LimitsSpec
from .log_event import LogEvent
from .me import Me
from .module import Module
from .module_page import ModulePage
from .network_mode import NetworkMode
from .network_policy import NetworkPolicy
from .new_tenant import NewTenant
from .new_token import NewToken
from .new_webhook import NewWebhook
from .outcome_view import OutcomeView
from .outcome_view_reason import OutcomeViewReason
from .preopen_mode import PreopenMode
from .preopen_spec import PreopenSpec
from .pull_blob import PullBlob
from .pull_policy_view import PullPolicyView
from .pull_request import PullRequest
from .pull_resolved_event import PullResolvedEvent
from .pull_result import PullResult
from .pull_stats_view import PullStatsView
from .runtime_kind import RuntimeKind
from .skipped_artifact_entry import SkippedArtifactEntry
from .state_event import StateEvent
from .step_spec import StepSpec
from .stream_output import StreamOutput
from .suite_summary import SuiteSummary
from .suite_summary_verdicts import SuiteSummaryVerdicts
from .tenant import Tenant
from .tenant_settings import TenantSettings
from .test_suite_spec import TestSuiteSpec
from .token_info import TokenInfo
from .usage_report import UsageReport
from .usage_report_by_outcome import UsageReportByOutcome
from .usage_totals import UsageTotals
from .usage_view import UsageView
from .verdict import Verdict
from .version_info import VersionInfo
from .wasm_spec import WasmSpec
from .webhook import Webhook
from .webhook_event import WebhookEvent

__all__ = (
    "ArtifactEntry",
    "ArtifactList",
    "AuditEntry",
    "AuditEntryDetail",
    "Batch",
    "BatchCancelled",
    "BatchCounts",
    "BatchCreated",
    "BatchLabels",
    "BatchPage",
    "BatchSpec",
    "BatchSpecLabels",
    "BuildResult",
    "CappedText",
    "CaseList",
    "CaseResult",
    "CaseSpec",
    "CaseStartedEvent",
    "CaseState",
    "CaseStatus",
    "Compare",
    "CompareMode",
    "CreatedToken",
    "CreatedWebhook",
    "Delivery",
    "DeliveryAttempt",
    "DeliveryPage",
    "DeliveryPayload",
    "DeliveryState",
    "Difference",
    "Encoding",
    "ErrorBody",
    "ErrorDetail",
    "ErrorDetailCode",
    "ExitEvent",
    "ExpectSpec",
    "GcResult",
    "Image",
    "ImageKindView",
    "ImageLayer",
    "ImageList",
    "ImportResult",
    "InputFileSpec",
    "Job",
    "JobLabels",
    "JobOutput",
    "JobPage",
    "JobSpec",
    "JobSpecEnv",
    "JobSpecLabels",
    "JobState",
    "LimitsSpec",
    "LogEvent",
    "Me",
    "Module",
    "ModulePage",
    "NetworkMode",
    "NetworkPolicy",
    "NewTenant",
    "NewToken",
    "NewWebhook",
    "OutcomeView",
    "OutcomeViewReason",
    "PreopenMode",
    "PreopenSpec",
    "PullBlob",
    "PullPolicyView",
    "PullRequest",
    "PullResolvedEvent",
    "PullResult",
    "PullStatsView",
    "RuntimeKind",
    "SkippedArtifactEntry",
    "StateEvent",
    "StepSpec",
    "StreamOutput",
    "SuiteSummary",
    "SuiteSummaryVerdicts",
    "Tenant",
    "TenantSettings",
    "TestSuiteSpec",
    "TokenInfo",
    "UsageReport",
    "UsageReportByOutcome",
    "UsageTotals",
    "UsageView",
    "Verdict",
    "VersionInfo",
    "WasmSpec",
    "Webhook",
    "WebhookEvent",
)
