from http import HTTPStatus
from typing import Any

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.error_body import ErrorBody
from ...models.job import Job
from ...models.job_spec import JobSpec
from ...types import UNSET, Response, Unset


def _get_kwargs(
    *,
    body: JobSpec,
    wait: int | Unset = UNSET,
    idempotency_key: None | str | Unset = UNSET,
    traceparent: None | str | Unset = UNSET,
) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    if not isinstance(idempotency_key, Unset):
        headers["Idempotency-Key"] = idempotency_key

    if not isinstance(traceparent, Unset):
        headers["traceparent"] = traceparent

    params: dict[str, Any] = {}

    params["wait"] = wait

    params = {k: v for k, v in params.items() if v is not UNSET and v is not None}

    _kwargs: dict[str, Any] = {
        "method": "post",
        "url": "/v1/jobs",
        "params": params,
    }

    _kwargs["json"] = body.to_dict()

    headers["Content-Type"] = "application/json"

    _kwargs["headers"] = headers
    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> ErrorBody | Job | None:
    if response.status_code == 200:
        response_200 = Job.from_dict(response.json())

        return response_200

    if response.status_code == 201:
        response_201 = Job.from_dict(response.json())

        return response_201

    if response.status_code == 400:
        response_400 = ErrorBody.from_dict(response.json())

        return response_400

    if response.status_code == 401:
        response_401 = ErrorBody.from_dict(response.json())

        return response_401

    if response.status_code == 403:
        response_403 = ErrorBody.from_dict(response.json())

        return response_403

    if response.status_code == 413:
        response_413 = ErrorBody.from_dict(response.json())

        return response_413

    if response.status_code == 422:
        response_422 = ErrorBody.from_dict(response.json())

        return response_422

    if response.status_code == 429:
        response_429 = ErrorBody.from_dict(response.json())

        return response_429

    if response.status_code == 503:
        response_503 = ErrorBody.from_dict(response.json())

        return response_503

    if client.raise_on_unexpected_status:
        raise errors.UnexpectedStatus(response.status_code, response.content)
    else:
        return None


def _build_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> Response[ErrorBody | Job]:
    return Response(
        status_code=HTTPStatus(response.status_code),
        content=response.content,
        headers=response.headers,
        parsed=_parse_response(client=client, response=response),
    )


def sync_detailed(
    *,
    client: AuthenticatedClient | Client,
    body: JobSpec,
    wait: int | Unset = UNSET,
    idempotency_key: None | str | Unset = UNSET,
    traceparent: None | str | Unset = UNSET,
) -> Response[ErrorBody | Job]:
    """Submit a job. It is queued at once (or, on a server whose worker is idle, started at once);
    follow it with `GET /v1/jobs/{id}/logs`, or ask with `?wait=SECS` for an answer once it has
    finished, output included.

    Args:
        wait (int | Unset):
        idempotency_key (None | str | Unset):
        traceparent (None | str | Unset):
        body (JobSpec): A job to run. Exactly one of `module` and `image` names the code.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[ErrorBody | Job]
    """

    kwargs = _get_kwargs(
        body=body,
        wait=wait,
        idempotency_key=idempotency_key,
        traceparent=traceparent,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    *,
    client: AuthenticatedClient | Client,
    body: JobSpec,
    wait: int | Unset = UNSET,
    idempotency_key: None | str | Unset = UNSET,
    traceparent: None | str | Unset = UNSET,
) -> ErrorBody | Job | None:
    """Submit a job. It is queued at once (or, on a server whose worker is idle, started at once);
    follow it with `GET /v1/jobs/{id}/logs`, or ask with `?wait=SECS` for an answer once it has
    finished, output included.

    Args:
        wait (int | Unset):
        idempotency_key (None | str | Unset):
        traceparent (None | str | Unset):
        body (JobSpec): A job to run. Exactly one of `module` and `image` names the code.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        ErrorBody | Job
    """

    return sync_detailed(
        client=client,
        body=body,
        wait=wait,
        idempotency_key=idempotency_key,
        traceparent=traceparent,
    ).parsed


async def asyncio_detailed(
    *,
    client: AuthenticatedClient | Client,
    body: JobSpec,
    wait: int | Unset = UNSET,
    idempotency_key: None | str | Unset = UNSET,
    traceparent: None | str | Unset = UNSET,
) -> Response[ErrorBody | Job]:
    """Submit a job. It is queued at once (or, on a server whose worker is idle, started at once);
    follow it with `GET /v1/jobs/{id}/logs`, or ask with `?wait=SECS` for an answer once it has
    finished, output included.

    Args:
        wait (int | Unset):
        idempotency_key (None | str | Unset):
        traceparent (None | str | Unset):
        body (JobSpec): A job to run. Exactly one of `module` and `image` names the code.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[ErrorBody | Job]
    """

    kwargs = _get_kwargs(
        body=body,
        wait=wait,
        idempotency_key=idempotency_key,
        traceparent=traceparent,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    *,
    client: AuthenticatedClient | Client,
    body: JobSpec,
    wait: int | Unset = UNSET,
    idempotency_key: None | str | Unset = UNSET,
    traceparent: None | str | Unset = UNSET,
) -> ErrorBody | Job | None:
    """Submit a job. It is queued at once (or, on a server whose worker is idle, started at once);
    follow it with `GET /v1/jobs/{id}/logs`, or ask with `?wait=SECS` for an answer once it has
    finished, output included.

    Args:
        wait (int | Unset):
        idempotency_key (None | str | Unset):
        traceparent (None | str | Unset):
        body (JobSpec): A job to run. Exactly one of `module` and `image` names the code.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        ErrorBody | Job
    """

    return (
        await asyncio_detailed(
            client=client,
            body=body,
            wait=wait,
            idempotency_key=idempotency_key,
            traceparent=traceparent,
        )
    ).parsed
