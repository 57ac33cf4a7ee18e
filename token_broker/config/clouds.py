"""National clouds: where Entra ID and Power BI live in each (``POWERBI_CLOUD``).

Each preset can be overridden setting by setting (``POWERBI_AUTHORITY_HOST``, ``POWERBI_SCOPE``,
``POWERBI_API_URL``). ``token_exchange_audience`` is the audience of the managed-identity token used
as a client assertion for federated credentials, which differs in the US government and China clouds.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cloud:
    """Endpoints of one national cloud."""

    name: str
    authority_host: str
    powerbi_resource: str
    api_url: str
    token_exchange_audience: str

    @property
    def scope(self) -> str:
        """The ``.default`` scope for Power BI in this cloud."""
        return self.powerbi_resource + "/.default"


CLOUDS: dict[str, Cloud] = {
    cloud.name.lower(): cloud
    for cloud in (
        Cloud("Public", "https://login.microsoftonline.com", "https://analysis.windows.net/powerbi/api",
              "https://api.powerbi.com/v1.0/myorg", "api://AzureADTokenExchange"),
        # US Government Community Cloud (GCC): commercial Entra ID, government Power BI.
        Cloud("USGov", "https://login.microsoftonline.com", "https://analysis.usgovcloudapi.net/powerbi/api",
              "https://api.powerbigov.us/v1.0/myorg", "api://AzureADTokenExchange"),
        Cloud("USGovHigh", "https://login.microsoftonline.us", "https://high.analysis.usgovcloudapi.net/powerbi/api",
              "https://api.high.powerbigov.us/v1.0/myorg", "api://AzureADTokenExchangeUSGov"),
        Cloud("USGovDoD", "https://login.microsoftonline.us", "https://mil.analysis.usgovcloudapi.net/powerbi/api",
              "https://api.mil.powerbigov.us/v1.0/myorg", "api://AzureADTokenExchangeUSGov"),
        Cloud("China", "https://login.chinacloudapi.cn", "https://analysis.chinacloudapi.cn/powerbi/api",
              "https://api.powerbi.cn/v1.0/myorg", "api://AzureADTokenExchangeChina"),
    )
}
CLOUD_NAMES = tuple(cloud.name for cloud in CLOUDS.values())
PUBLIC = CLOUDS["public"]
