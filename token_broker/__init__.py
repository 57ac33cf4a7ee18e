"""Power BI token broker: Azure AD tokens and Power BI embed tokens for single-page apps.

Grouped by responsibility (docs/ARCHITECTURE.md): ``web`` (endpoints, responses), ``callers`` (who is
calling), ``aad`` (Azure AD tokens through MSAL), ``powerbi`` (embed tokens), ``config`` (the settings),
``support`` (errors, caches, redaction), ``doctor``; ``runtime`` (process lifecycle) and ``broker``
(assembly).
"""

__version__ = "0.1.0"
