"""The provisioning API /api/v1/ (REST framework, OpenAPI schema, Bearer tokens)."""
