"""Dashboard errors. Pages render them as HTML; the App server's handler shapes the API's JSON.

    AppServerError (tickets/errors.py)
     ├── SignInRequired      303 to /ui/login (pages), 401 (streams and exports)
     ├── Forbidden           403 forbidden          (role too low, or a bad CSRF token)
     ├── NotFound            404 not_found          (absent, or another tenant's)
     └── TooManySignIns      429 too_many_sign_ins
    AccountError             a user or key change that cannot be made; the message says why
"""

from __future__ import annotations

from switchboard.tickets.errors import AppServerError


class SignInRequired(AppServerError):
    status_code = 401
    error_code = "sign_in_required"

    def __init__(self, path: str) -> None:
        super().__init__("sign in to see this page")
        self.path = path


class Forbidden(AppServerError):
    status_code = 403
    error_code = "forbidden"


class NotFound(AppServerError):
    status_code = 404
    error_code = "not_found"


class TooManySignIns(AppServerError):
    status_code = 429
    error_code = "too_many_sign_ins"


class AccountError(ValueError):
    """A user or API key change that cannot be made (unknown user, bad role, email taken, ...)."""
