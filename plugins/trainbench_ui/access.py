"""Airflow's own authentication in front of every page that shows results.

The same identity Airflow's REST API accepts: a JWT in `Authorization: Bearer <token>` (a client that
logged in with POST /auth/token), else the `_token` cookie the Airflow UI sets at login (a browser, also
when the page is shown inside the UI).  The user must be allowed to see the Airflow website; a browser
without a login is sent to Airflow's login page and brought back, any other anonymous request gets 401.

Airflow's API modules are imported on the first request: every Airflow component loads plugins, and only
the api-server serves these pages.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

bearer_scheme = HTTPBearer(auto_error=False)


class LoginRequired(Exception):
    """A browser without a valid Airflow login: answered with a redirect to Airflow's login page."""

    def __init__(self, url: str):
        super().__init__(url)
        self.url = url


def _wants_html(request: Request) -> bool:
    return request.method == "GET" and "text/html" in request.headers.get("accept", "")


async def require_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Any:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from airflow.api_fastapi.core_api.security import get_user

    try:
        user = await get_user(request, None, credentials)
    except HTTPException as exc:
        if exc.status_code == status.HTTP_401_UNAUTHORIZED and credentials is None and _wants_html(request):
            raise LoginRequired(get_auth_manager().get_url_login(next_url=str(request.url))) from None
        raise
    if not get_auth_manager().is_authorized_view(access_view=AccessView.WEBSITE, user=user):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "not allowed to see the Airflow website")
    return user


UserDep = Annotated[Any, Depends(require_user)]
