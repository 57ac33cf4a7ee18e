"""Power BI: the REST client, the embed service and the embed request."""
