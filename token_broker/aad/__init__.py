"""Azure AD: the token service (MSAL), client credentials, Key Vault secrets, the app's own identity, AADSTS mapping."""
