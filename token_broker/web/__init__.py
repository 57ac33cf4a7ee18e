"""HTTP: the endpoints' handlers, responses and problem documents, the OpenAPI description."""
