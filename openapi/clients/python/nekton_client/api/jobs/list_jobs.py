from http import HTTPStatus
from typing import Any
from uuid import UUID

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.error_body import ErrorBody
from ...models.job_page import JobPage
from ...models.job_state import JobState
from ...types import UNSET, Response, Unset


def _get_kwargs(
    *,
    state: JobState | Unset = UNSET,
    label: list[str] | Unset = UNSET,
    batch: UUID | Unset = UNSET,
    cursor: str | Unset = UNSET,
    limit: int | Unset = UNSET,
) -> dict[str, Any]:

    params: dict[str, Any] = {}

    json_state: str | Unset = UNSET
    if not isinstance(state, Unset):
        json_state = state.value

    params["state"] = json_state

    json_label: list[str] | Unset = UNSET
    if not isinstance(label, Unset):
        json_label = label

    params["label"] = json_label

    json_batch: str | Unset = UNSET
    if not isinstance(batch, Unset):
        json_batch = str(batch)
    params["batch"] = json_batch

    params["cursor"] = cursor

    params["limit"] = limit

    params = {k: v for k, v in params.items() if v is not UNSET and v is not None}

    _kwargs: dict[str, Any] = {
        "method": "get",
        "url": "/v1/jobs",
        "params": params,
    }

    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> ErrorBody | JobPage | None:
    if response.status_code == 200:
        response_200 = JobPage.from_dict(response.json())

        return response_200

    if response.status_code == 400:
        response_400 = ErrorBody.from_dict(response.json())

        return response_400

    if response.status_code == 401:
        response_401 = ErrorBody.from_dict(response.json())

        return response_401

    if response.status_code == 403:
        response_403 = ErrorBody.from_dict(response.json())

        return response_403

    if client.raise_on_unexpected_status:
        raise errors.UnexpectedStatus(response.status_code, response.content)
    else:
        return None


def _build_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> Response[ErrorBody | JobPage]:
    return Response(
        status_code=HTTPStatus(response.status_code),
        content=response.content,
        headers=response.headers,
        parsed=_parse_response(client=client, response=response),
    )


def sync_detailed(
    *,
    client: AuthenticatedClient | Client,
    state: JobState | Unset = UNSET,
    label: list[str] | Unset = UNSET,
    batch: UUID | Unset = UNSET,
    cursor: str | Unset = UNSET,
    limit: int | Unset = UNSET,
) -> Response[ErrorBody | JobPage]:
    """List jobs, newest first, with keyset pagination.

    Args:
        state (JobState | Unset): The states of a job; see ARCHITECTURE.md for the diagram.
        label (list[str] | Unset):
        batch (UUID | Unset):
        cursor (str | Unset):
        limit (int | Unset):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[ErrorBody | JobPage]
    """

    kwargs = _get_kwargs(
        state=state,
        label=label,
        batch=batch,
        cursor=cursor,
        limit=limit,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    *,
    client: AuthenticatedClient | Client,
    state: JobState | Unset = UNSET,
    label: list[str] | Unset = UNSET,
    batch: UUID | Unset = UNSET,
    cursor: str | Unset = UNSET,
    limit: int | Unset = UNSET,
) -> ErrorBody | JobPage | None:
    """List jobs, newest first, with keyset pagination.

    Args:
        state (JobState | Unset): The states of a job; see ARCHITECTURE.md for the diagram.
        label (list[str] | Unset):
        batch (UUID | Unset):
        cursor (str | Unset):
        limit (int | Unset):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        ErrorBody | JobPage
    """

    return sync_detailed(
        client=client,
        state=state,
        label=label,
        batch=batch,
        cursor=cursor,
        limit=limit,
    ).parsed


async def asyncio_detailed(
    *,
    client: AuthenticatedClient | Client,
    state: JobState | Unset = UNSET,
    label: list[str] | Unset = UNSET,
    batch: UUID | Unset = UNSET,
    cursor: str | Unset = UNSET,
    limit: int | Unset = UNSET,
) -> Response[ErrorBody | JobPage]:
    """List jobs, newest first, with keyset pagination.

    Args:
        state (JobState | Unset): The states of a job; see ARCHITECTURE.md for the diagram.
        label (list[str] | Unset):
        batch (UUID | Unset):
        cursor (str | Unset):
        limit (int | Unset):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[ErrorBody | JobPage]
    """

    kwargs = _get_kwargs(
        state=state,
        label=label,
        batch=batch,
        cursor=cursor,
        limit=limit,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    *,
    client: AuthenticatedClient | Client,
    state: JobState | Unset = UNSET,
    label: list[str] | Unset = UNSET,
    batch: UUID | Unset = UNSET,
    cursor: str | Unset = UNSET,
    limit: int | Unset = UNSET,
) -> ErrorBody | JobPage | None:
    """List jobs, newest first, with keyset pagination.

    Args:
        state (JobState | Unset): The states of a job; see ARCHITECTURE.md for the diagram.
        label (list[str] | Unset):
        batch (UUID | Unset):
        cursor (str | Unset):
        limit (int | Unset):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        ErrorBody | JobPage
    """

    return (
        await asyncio_detailed(
            client=client,
            state=state,
            label=label,
            batch=batch,
            cursor=cursor,
            limit=limit,
        )
    ).parsed
