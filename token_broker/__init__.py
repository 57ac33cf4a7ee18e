"""Power BI token broker: Azure AD tokens and Power BI embed tokens for single-page apps.

Small single-purpose modules: ``settings`` (the settings contract), ``credentials`` (client
credentials), ``tokens`` (MSAL, cached and single-flight), ``callers`` (caller authentication),
``http`` (responses and problem documents), ``errors`` (typed errors), ``handlers`` (endpoints).
"""

__version__ = "0.1.0"
