from http import HTTPStatus
from typing import Any

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.error_body import ErrorBody
from ...models.pull_request import PullRequest
from ...models.pull_result import PullResult
from ...types import Response


def _get_kwargs(
    *,
    body: PullRequest,
) -> dict[str, Any]:
    headers: dict[str, Any] = {}

    _kwargs: dict[str, Any] = {
        "method": "post",
        "url": "/v1/images/pull",
    }

    _kwargs["json"] = body.to_dict()

    headers["Content-Type"] = "application/json"

    _kwargs["headers"] = headers
    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> ErrorBody | PullResult | None:
    if response.status_code == 200:
        response_200 = PullResult.from_dict(response.json())

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

    if response.status_code == 404:
        response_404 = ErrorBody.from_dict(response.json())

        return response_404

    if response.status_code == 422:
        response_422 = ErrorBody.from_dict(response.json())

        return response_422

    if response.status_code == 502:
        response_502 = ErrorBody.from_dict(response.json())

        return response_502

    if response.status_code == 503:
        response_503 = ErrorBody.from_dict(response.json())

        return response_503

    if client.raise_on_unexpected_status:
        raise errors.UnexpectedStatus(response.status_code, response.content)
    else:
        return None


def _build_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> Response[ErrorBody | PullResult]:
    return Response(
        status_code=HTTPStatus(response.status_code),
        content=response.content,
        headers=response.headers,
        parsed=_parse_response(client=client, response=response),
    )


def sync_detailed(
    *,
    client: AuthenticatedClient | Client,
    body: PullRequest,
) -> Response[ErrorBody | PullResult]:
    """Pull an image into the worker host's store. Without SSE: waits for the pull and answers the
    image. With `Accept: text/event-stream`: SSE events `resolved` (`PullResolvedEvent`),
    `progress` (`PullBlob`: bytes `done` of `total` for one blob), `cached` (a blob already
    stored), `extracting` / `extracted` (a layer being unpacked; `done` = unpacked bytes), then
    `done` (`PullResult`) or `error` (`ErrorBody`). Concurrent pulls of one image share one
    download; the pull goes on if the client disconnects.

    Args:
        body (PullRequest): `POST /v1/images/pull`.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[ErrorBody | PullResult]
    """

    kwargs = _get_kwargs(
        body=body,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    *,
    client: AuthenticatedClient | Client,
    body: PullRequest,
) -> ErrorBody | PullResult | None:
    """Pull an image into the worker host's store. Without SSE: waits for the pull and answers the
    image. With `Accept: text/event-stream`: SSE events `resolved` (`PullResolvedEvent`),
    `progress` (`PullBlob`: bytes `done` of `total` for one blob), `cached` (a blob already
    stored), `extracting` / `extracted` (a layer being unpacked; `done` = unpacked bytes), then
    `done` (`PullResult`) or `error` (`ErrorBody`). Concurrent pulls of one image share one
    download; the pull goes on if the client disconnects.

    Args:
        body (PullRequest): `POST /v1/images/pull`.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        ErrorBody | PullResult
    """

    return sync_detailed(
        client=client,
        body=body,
    ).parsed


async def asyncio_detailed(
    *,
    client: AuthenticatedClient | Client,
    body: PullRequest,
) -> Response[ErrorBody | PullResult]:
    """Pull an image into the worker host's store. Without SSE: waits for the pull and answers the
    image. With `Accept: text/event-stream`: SSE events `resolved` (`PullResolvedEvent`),
    `progress` (`PullBlob`: bytes `done` of `total` for one blob), `cached` (a blob already
    stored), `extracting` / `extracted` (a layer being unpacked; `done` = unpacked bytes), then
    `done` (`PullResult`) or `error` (`ErrorBody`). Concurrent pulls of one image share one
    download; the pull goes on if the client disconnects.

    Args:
        body (PullRequest): `POST /v1/images/pull`.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[ErrorBody | PullResult]
    """

    kwargs = _get_kwargs(
        body=body,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    *,
    client: AuthenticatedClient | Client,
    body: PullRequest,
) -> ErrorBody | PullResult | None:
    """Pull an image into the worker host's store. Without SSE: waits for the pull and answers the
    image. With `Accept: text/event-stream`: SSE events `resolved` (`PullResolvedEvent`),
    `progress` (`PullBlob`: bytes `done` of `total` for one blob), `cached` (a blob already
    stored), `extracting` / `extracted` (a layer being unpacked; `done` = unpacked bytes), then
    `done` (`PullResult`) or `error` (`ErrorBody`). Concurrent pulls of one image share one
    download; the pull goes on if the client disconnects.

    Args:
        body (PullRequest): `POST /v1/images/pull`.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        ErrorBody | PullResult
    """

    return (
        await asyncio_detailed(
            client=client,
            body=body,
        )
    ).parsed
