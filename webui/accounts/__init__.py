"""Admin accounts and roles (superadmin, domain admin), API tokens, login throttling, TOTP."""
