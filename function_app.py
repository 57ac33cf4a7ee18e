"""Azure Functions entry point (Python v2 programming model): routes only.

The logic lives in the ``token_broker`` package; this module is the app's one FunctionRegister.
Every route accepts every method so that the broker, not the host, answers a wrong method with
405 and ``Allow``. With ``CALLER_AUTH=function_key`` (read from the app settings only) the token, embed
and proxy routes are indexed with auth level FUNCTION, so the host checks the key first; health and the
OpenAPI description stay anonymous. Should the level and the broker's caller mode disagree: 503.
"""

import azure.functions as func

from token_broker.support import redaction
from token_broker.web import handlers

redaction.install()  # first: every log record of the process is redacted, whichever library writes it
app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


TOKEN_AUTH_LEVEL = handlers.token_auth_level()  # decided once, from the app settings (CALLER_AUTH)


@app.route(route="token", methods=handlers.ALL_METHODS, auth_level=TOKEN_AUTH_LEVEL)
def token(req: func.HttpRequest) -> func.HttpResponse:
    """Issue a Power BI access token to an authenticated caller."""
    return handlers.token(req)


@app.route(route="embed-token", methods=handlers.ALL_METHODS, auth_level=TOKEN_AUTH_LEVEL)
def embed_token(req: func.HttpRequest) -> func.HttpResponse:
    """Issue a Power BI embed token for reports the caller may see."""
    return handlers.embed_token(req)


@app.route(route="reports/{reportId}/embed", methods=handlers.ALL_METHODS, auth_level=TOKEN_AUTH_LEVEL)
def report_embed(req: func.HttpRequest) -> func.HttpResponse:
    """Issue an embed token and embed URL for one report."""
    return handlers.report_embed(req)


@app.route(route="powerbi/{*path}", methods=handlers.ALL_METHODS, auth_level=TOKEN_AUTH_LEVEL)
def powerbi_proxy(req: func.HttpRequest) -> func.HttpResponse:
    """Forward allow-listed Power BI REST operations with the broker's token (the caller never holds it)."""
    return handlers.powerbi_proxy(req)


@app.route(route="health", methods=handlers.ALL_METHODS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    """Report whether the configuration is valid, naming every problem."""
    return handlers.health(req)


@app.route(route="openapi.json", methods=handlers.ALL_METHODS)
def openapi(req: func.HttpRequest) -> func.HttpResponse:
    """Serve the OpenAPI 3.1 description of these endpoints."""
    return handlers.openapi(req)


handlers.check_settings_at_start()  # after indexing: problems and warnings are logged when the app starts
