from http import HTTPStatus
from typing import Any

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.batch_created import BatchCreated
from ...models.batch_spec import BatchSpec
from ...models.error_body import ErrorBody
from ...types import UNSET, Response, Unset


def _get_kwargs(
    *,
    body: BatchSpec,
    idempotency_key: None | str | Unset = UNSET,
    traceparent: None | str | Unset = UNSET,
) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    if not isinstance(idempotency_key, Unset):
        headers["Idempotency-Key"] = idempotency_key

    if not isinstance(traceparent, Unset):
        headers["traceparent"] = traceparent

    _kwargs: dict[str, Any] = {
        "method": "post",
        "url": "/v1/batches",
    }

    _kwargs["json"] = body.to_dict()

    headers["Content-Type"] = "application/json"

    _kwargs["headers"] = headers
    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> BatchCreated | ErrorBody | None:
    if response.status_code == 200:
        response_200 = BatchCreated.from_dict(response.json())

        return response_200

    if response.status_code == 201:
        response_201 = BatchCreated.from_dict(response.json())

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

    if client.raise_on_unexpected_status:
        raise errors.UnexpectedStatus(response.status_code, response.content)
    else:
        return None


def _build_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> Response[BatchCreated | ErrorBody]:
    return Response(
        status_code=HTTPStatus(response.status_code),
        content=response.content,
        headers=response.headers,
        parsed=_parse_response(client=client, response=response),
    )


def sync_detailed(
    *,
    client: AuthenticatedClient | Client,
    body: BatchSpec,
    idempotency_key: None | str | Unset = UNSET,
    traceparent: None | str | Unset = UNSET,
) -> Response[BatchCreated | ErrorBody]:
    """Submit many jobs at once (all stored or none). Each job is `defaults` overlaid with its own
    fields; the batch's labels are added to every job.

    Args:
        idempotency_key (None | str | Unset):
        traceparent (None | str | Unset):
        body (BatchSpec): Many jobs submitted at once, sharing defaults.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[BatchCreated | ErrorBody]
    """

    kwargs = _get_kwargs(
        body=body,
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
    body: BatchSpec,
    idempotency_key: None | str | Unset = UNSET,
    traceparent: None | str | Unset = UNSET,
) -> BatchCreated | ErrorBody | None:
    """Submit many jobs at once (all stored or none). Each job is `defaults` overlaid with its own
    fields; the batch's labels are added to every job.

    Args:
        idempotency_key (None | str | Unset):
        traceparent (None | str | Unset):
        body (BatchSpec): Many jobs submitted at once, sharing defaults.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        BatchCreated | ErrorBody
    """

    return sync_detailed(
        client=client,
        body=body,
        idempotency_key=idempotency_key,
        traceparent=traceparent,
    ).parsed


async def asyncio_detailed(
    *,
    client: AuthenticatedClient | Client,
    body: BatchSpec,
    idempotency_key: None | str | Unset = UNSET,
    traceparent: None | str | Unset = UNSET,
) -> Response[BatchCreated | ErrorBody]:
    """Submit many jobs at once (all stored or none). Each job is `defaults` overlaid with its own
    fields; the batch's labels are added to every job.

    Args:
        idempotency_key (None | str | Unset):
        traceparent (None | str | Unset):
        body (BatchSpec): Many jobs submitted at once, sharing defaults.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[BatchCreated | ErrorBody]
    """

    kwargs = _get_kwargs(
        body=body,
        idempotency_key=idempotency_key,
        traceparent=traceparent,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    *,
    client: AuthenticatedClient | Client,
    body: BatchSpec,
    idempotency_key: None | str | Unset = UNSET,
    traceparent: None | str | Unset = UNSET,
) -> BatchCreated | ErrorBody | None:
    """Submit many jobs at once (all stored or none). Each job is `defaults` overlaid with its own
    fields; the batch's labels are added to every job.

    Args:
        idempotency_key (None | str | Unset):
        traceparent (None | str | Unset):
        body (BatchSpec): Many jobs submitted at once, sharing defaults.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        BatchCreated | ErrorBody
    """

    return (
        await asyncio_detailed(
            client=client,
            body=body,
            idempotency_key=idempotency_key,
            traceparent=traceparent,
        )
    ).parsed
