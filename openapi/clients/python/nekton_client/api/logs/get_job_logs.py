import datetime
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import quote
from uuid import UUID

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.error_body import ErrorBody
from ...types import UNSET, Response, Unset


def _get_kwargs(
    id: UUID,
    *,
    stream: str | Unset = UNSET,
    tail: int | Unset = UNSET,
    since: datetime.datetime | Unset = UNSET,
    timestamps: bool | Unset = UNSET,
    last_event_id: None | str | Unset = UNSET,
) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    if not isinstance(last_event_id, Unset):
        headers["Last-Event-ID"] = last_event_id

    params: dict[str, Any] = {}

    params["stream"] = stream

    params["tail"] = tail

    json_since: str | Unset = UNSET
    if not isinstance(since, Unset):
        json_since = since.isoformat()
    params["since"] = json_since

    params["timestamps"] = timestamps

    params = {k: v for k, v in params.items() if v is not UNSET and v is not None}

    _kwargs: dict[str, Any] = {
        "method": "get",
        "url": "/v1/jobs/{id}/logs".format(
            id=quote(str(id), safe=""),
        ),
        "params": params,
    }

    _kwargs["headers"] = headers
    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> Any | ErrorBody | str | None:
    if response.status_code == 200:
        response_200 = response.text
        return response_200

    if response.status_code == 204:
        response_204 = cast(Any, None)
        return response_204

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

    if response.status_code == 503:
        response_503 = ErrorBody.from_dict(response.json())

        return response_503

    if client.raise_on_unexpected_status:
        raise errors.UnexpectedStatus(response.status_code, response.content)
    else:
        return None


def _build_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> Response[Any | ErrorBody | str]:
    return Response(
        status_code=HTTPStatus(response.status_code),
        content=response.content,
        headers=response.headers,
        parsed=_parse_response(client=client, response=response),
    )


def sync_detailed(
    id: UUID,
    *,
    client: AuthenticatedClient,
    stream: str | Unset = UNSET,
    tail: int | Unset = UNSET,
    since: datetime.datetime | Unset = UNSET,
    timestamps: bool | Unset = UNSET,
    last_event_id: None | str | Unset = UNSET,
) -> Response[Any | ErrorBody | str]:
    """A job's output. With `Accept: text/event-stream`: SSE events `state`, `log` and finally `exit`
    (see the module docs for ids; send `Last-Event-ID` to resume), optionally from the last `tail`
    lines or from a time on (`since`). Otherwise: the stored output of the latest attempt as raw
    bytes, optionally one stream, the last lines, from a time on, each line with its time.

    Args:
        id (UUID):
        stream (str | Unset):
        tail (int | Unset):
        since (datetime.datetime | Unset):
        timestamps (bool | Unset):
        last_event_id (None | str | Unset):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[Any | ErrorBody | str]
    """

    kwargs = _get_kwargs(
        id=id,
        stream=stream,
        tail=tail,
        since=since,
        timestamps=timestamps,
        last_event_id=last_event_id,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    id: UUID,
    *,
    client: AuthenticatedClient,
    stream: str | Unset = UNSET,
    tail: int | Unset = UNSET,
    since: datetime.datetime | Unset = UNSET,
    timestamps: bool | Unset = UNSET,
    last_event_id: None | str | Unset = UNSET,
) -> Any | ErrorBody | str | None:
    """A job's output. With `Accept: text/event-stream`: SSE events `state`, `log` and finally `exit`
    (see the module docs for ids; send `Last-Event-ID` to resume), optionally from the last `tail`
    lines or from a time on (`since`). Otherwise: the stored output of the latest attempt as raw
    bytes, optionally one stream, the last lines, from a time on, each line with its time.

    Args:
        id (UUID):
        stream (str | Unset):
        tail (int | Unset):
        since (datetime.datetime | Unset):
        timestamps (bool | Unset):
        last_event_id (None | str | Unset):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Any | ErrorBody | str
    """

    return sync_detailed(
        id=id,
        client=client,
        stream=stream,
        tail=tail,
        since=since,
        timestamps=timestamps,
        last_event_id=last_event_id,
    ).parsed


async def asyncio_detailed(
    id: UUID,
    *,
    client: AuthenticatedClient,
    stream: str | Unset = UNSET,
    tail: int | Unset = UNSET,
    since: datetime.datetime | Unset = UNSET,
    timestamps: bool | Unset = UNSET,
    last_event_id: None | str | Unset = UNSET,
) -> Response[Any | ErrorBody | str]:
    """A job's output. With `Accept: text/event-stream`: SSE events `state`, `log` and finally `exit`
    (see the module docs for ids; send `Last-Event-ID` to resume), optionally from the last `tail`
    lines or from a time on (`since`). Otherwise: the stored output of the latest attempt as raw
    bytes, optionally one stream, the last lines, from a time on, each line with its time.

    Args:
        id (UUID):
        stream (str | Unset):
        tail (int | Unset):
        since (datetime.datetime | Unset):
        timestamps (bool | Unset):
        last_event_id (None | str | Unset):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[Any | ErrorBody | str]
    """

    kwargs = _get_kwargs(
        id=id,
        stream=stream,
        tail=tail,
        since=since,
        timestamps=timestamps,
        last_event_id=last_event_id,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    id: UUID,
    *,
    client: AuthenticatedClient,
    stream: str | Unset = UNSET,
    tail: int | Unset = UNSET,
    since: datetime.datetime | Unset = UNSET,
    timestamps: bool | Unset = UNSET,
    last_event_id: None | str | Unset = UNSET,
) -> Any | ErrorBody | str | None:
    """A job's output. With `Accept: text/event-stream`: SSE events `state`, `log` and finally `exit`
    (see the module docs for ids; send `Last-Event-ID` to resume), optionally from the last `tail`
    lines or from a time on (`since`). Otherwise: the stored output of the latest attempt as raw
    bytes, optionally one stream, the last lines, from a time on, each line with its time.

    Args:
        id (UUID):
        stream (str | Unset):
        tail (int | Unset):
        since (datetime.datetime | Unset):
        timestamps (bool | Unset):
        last_event_id (None | str | Unset):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Any | ErrorBody | str
    """

    return (
        await asyncio_detailed(
            id=id,
            client=client,
            stream=stream,
            tail=tail,
            since=since,
            timestamps=timestamps,
            last_event_id=last_event_id,
        )
    ).parsed
